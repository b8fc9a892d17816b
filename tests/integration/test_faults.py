"""Fault injection through the real relay (policies/README.md, README "Fault injection").

Every fault type is armed from a scenario file written into the test's work directory
(`mailtap run --scenario FILE`) and driven by real peers: swaks as the client where a real
sender's behaviour matters, the raw SmtpClient where the exact bytes, their timing or the
way the connection ends matter; the aiosmtpd Recorder (or the scripted upstream when the
question is whether the upstream was contacted at all) as the destination. Each test
asserts (a) the replies the client saw, (b) what the upstream received, and (c) the
capture's `fault` records (rule, fault_type, decision, phase; captures/FORMAT.md).
Timing is asserted only where the contract names it: a delay record's planned delay equals
the configured one and its actual delay is at least that; a stall ends after its `max`.

Classes: CommandFaults (faults at commands and the end of data), GreetingAndCapabilityFaults
(connect, banner, EHLO rewrites), UpstreamFaults (upstream_unreachable), SessionFaults
(throttle, slice, split_dot_withhold), StatefulFaults (greylist, quota, fail_then_pass,
max_count, across connections), Precedence, Matchers, Determinism (--seed).
"""

import contextlib
import http.client
import json
import os
import re
import socket
import struct
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, ScriptedAnswers, ScriptedConnection, ScriptedServer, SwaksTranscript, documented_end_reasons, dot_stuff, dot_unstuff, fault_records,
                     fault_summary, make_message, parse_replies, record_bytes, recv_outcome, show_json,
                     run_mailtap, scaled, swaks_wire_message, wait_until)

FROM = "sender@example.test"
TO = "rcpt@example.test"


class ChunkingDestination(ScriptedServer):
    """A destination that offers CHUNKING and reads BDAT chunks by their counts (RFC 3030 2),
    which neither smtp-sink nor ScriptedAnswers do. conn.chunks: each chunk's payload as it
    came in whole; conn.messages: the messages whose LAST chunk came whole (the only ones a
    destination could deliver). Every command gets 250, QUIT 221."""

    def __init__(self, lifetime=60, refused_recipient=None):
        self.lifetime = lifetime
        self.refused_recipient = refused_recipient   # RCPTs naming it get 550, as Postfix's
        super().__init__(ScriptedConnection)

    def _serve(self, conn):
        conn.chunks = []
        try:
            with contextlib.suppress(OSError), contextlib.closing(conn.sock) as sock:
                self._converse(conn, sock)
        finally:
            conn.closed.set()

    def _converse(self, conn, sock):
        sock.sendall(b"220 chunking.test ESMTP\r\n")
        buf, message, accepted = b"", b"", 0
        for data in self.received(conn, self.lifetime):
            buf += data
            while b"\r\n" in buf:
                line, rest = buf.split(b"\r\n", 1)
                words = line.split()
                verb = words[0].upper() if words else b""
                if verb == b"BDAT":
                    size = int(words[1])
                    if len(rest) < size:
                        break   # the chunk is not all in yet
                    chunk, buf = rest[:size], rest[size:]
                    conn.commands.append(line)
                    conn.chunks.append(chunk)
                    message += chunk
                    if not accepted:   # Postfix: no chunk is taken without a recipient
                        sock.sendall(b"554 5.5.1 Error: no valid recipients\r\n")
                        message = b""
                    elif len(words) > 2 and words[2].upper() == b"LAST":
                        conn.messages.append(message)
                        message = b""
                        sock.sendall(b"250 2.0.0 Ok: queued as CHUNKED\r\n")
                    else:
                        sock.sendall(b"250 2.0.0 Ok: %d octets received\r\n" % size)
                    continue
                buf = rest
                conn.commands.append(line)
                if verb == b"EHLO":
                    sock.sendall(b"250-chunking.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
                elif verb == b"RCPT" and self.refused_recipient and self.refused_recipient in line:
                    sock.sendall(b"550 5.1.1 Recipient address rejected\r\n")
                elif verb == b"RCPT":
                    accepted += 1
                    sock.sendall(b"250 2.1.5 Ok\r\n")
                else:
                    if verb in (b"MAIL", b"RSET"):
                        accepted = 0
                    sock.sendall(b"250 2.0.0 Ok\r\n")


class FaultTest(IntegrationTest):
    """A relay armed with one scenario file per test, its generated TLS key kept in the work
    directory (XDG_STATE_HOME), and helpers to drive it."""

    def setUp(self):
        super().setUp()
        self.state_home = os.path.join(self.workdir, "state")
        os.makedirs(self.state_home)
        self.env = dict(os.environ, XDG_STATE_HOME=self.state_home)

    # -- peers
    def scenario(self, text, name="scenario.toml"):
        return self.write_file(name, text.encode("utf-8"))

    def relay(self, rules, upstream=None, args=(), config=None, seed=None, name="mailtap"):
        """mailtap with `rules` (TOML text, or a list of them: one scenario file each, loaded
        in order), relaying to `upstream` (anything with a .port, or None for the built-in
        sink). seed=None keeps the harness' --seed 1."""
        argv = []
        for i, text in enumerate([rules] if isinstance(rules, str) else rules):
            argv += ["--scenario", self.scenario(text, "%s-scenario-%d.toml" % (name, i + 1))]
        if config is not None:
            argv += ["--config", self.write_file(name + "-config.toml", config.encode("utf-8"))]
        argv += list(args)
        up = "builtin" if upstream is None else "%s:%d" % (LOOPBACK, upstream.port)
        if seed is None:
            return self.start_mailtap(upstream=up, args=argv, env=self.env, name=name)
        return self.start_mailtap(args=["--upstream", up, "--seed", str(seed), *argv],
                                  env=self.env, name=name, minimal=True)

    def send(self, port, *args, frm=FROM, to=TO):
        """One swaks session; returns its parsed transcript (the exit code is in .rc)."""
        rc, out = self.swaks(port, "--from", frm, "--to", to, *args)
        t = SwaksTranscript(out)
        t.rc = rc
        return t

    def open_envelope(self, port, frm=FROM, to=TO):
        """A greeted client whose MAIL and RCPT were accepted."""
        c = self.greeted_client(port)
        self.assertReply(c.command("MAIL FROM:<%s>" % frm), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % to), 250)
        return c

    def open_transaction(self, port, frm=FROM, to=TO):
        c = self.open_envelope(port, frm, to)
        self.assertReply(c.command("DATA"), 354)
        return c

    def metrics(self, m):
        """The relay's /metrics page, as text."""
        conn = http.client.HTTPConnection(LOOPBACK, m.admin_port(), timeout=20)
        try:
            conn.request("GET", "/metrics")
            return conn.getresponse().read().decode("utf-8")
        finally:
            conn.close()

    # -- assertions
    def assertInjectedTotal(self, m, rule, fault_type, count):
        """mailtap_faults_injected_total says `count` for the rule (policies/README.md,
        "Counted when applied"); a rule never counted has no series or 0."""
        pattern = r'(?m)^mailtap_faults_injected_total\{rule="%s",type="%s"\} %d(\.0)?$' % (
            re.escape(rule), re.escape(fault_type), count)
        metrics = self.metrics(m)
        if count == 0 and 'rule="%s"' % rule not in metrics:
            return
        self.assertRegex(metrics, pattern)

    def assertNextMessageWhole(self, c, up, marker):
        """The client's next message, sent with DATA, reaches the scripted destination `up`
        whole (a message a fault absorbed before it is over); then QUIT."""
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        body = make_message("<%s@example.test>" % marker, marker.encode() + b"-marker\r\n")
        c.send(body + b".\r\n")
        self.assertReply(c.reply(10), 250)
        self.quit(c)
        (conn,) = up.wait_for_connections(1)
        wait_until(lambda: conn.messages, 10, "the message at the destination")
        self.assertEqual(conn.messages, [body], "the next message reaches the destination whole")

    def assertFaults(self, cap, expected):
        """The capture's fault records are exactly `expected` (rule, fault_type, decision, phase)."""
        self.assertEqual(fault_summary(cap), expected, fault_records(cap))

    def assertDelivered(self, t):
        eod = t.end_of_data_replies()
        self.assertEqual([r.code for r in eod], [250], t.text[-3000:])

    def assertNothingUpstream(self, rec, cap):
        """The session is over (its capture released): whatever the relay was going to deliver
        has been delivered, so an empty recorder means nothing was."""
        self.assertEqual(rec.count(), 0, rec.messages)
        self.assertNotIn(b"\r\n.\r\n", cap.bytes_of("upstream", "out"))


class CommandFaults(FaultTest):

    def test_reply_at_mail_only_for_matching_sender(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "blocked-sender"
type = "reply"
phase = "mail"
sender = "*@spam.example"
code = 550
enhanced = "5.7.1"
text = "Email blocked"
''', rec)
        bad = self.send(m.port, frm="bulk@spam.example")
        self.assertReply(bad.reply_to("MAIL FROM"), 550, "5.7.1")
        self.assertEqual(bad.end_of_data_replies(), [])
        caps = m.wait_captures(1)
        self.assertNothingUpstream(rec, caps[0])
        good = self.send(m.port, frm="person@ham.example")
        self.assertReply(good.reply_to("MAIL FROM"), 250)
        self.assertDelivered(good)
        msgs = rec.wait_for(1)
        self.assertEqual([(x["mail_from"], x["rcpt_tos"]) for x in msgs], [("person@ham.example", [TO])])
        caps = m.wait_captures(2)
        self.assertFaults(caps[0], [("blocked-sender", "reply", "reply", "mail")])
        self.assertEqual(fault_records(caps[0])[0]["detail"], "550 5.7.1 Email blocked")
        self.assertFaults(caps[1], [])

    def test_reply_at_rcpt_only_for_matching_recipient(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "full"
type = "reply"
phase = "rcpt"
recipient = "*@full.example"
code = 552
enhanced = "5.2.2"
text = "Mailbox full"
''', rec)
        t = self.send(m.port, to="ok@example.test,over@FULL.example")   # globs are case-insensitive
        self.assertReply(t.reply_to("RCPT TO:<ok@"), 250)
        self.assertReply(t.reply_to("RCPT TO:<over@"), 552, "5.2.2")
        self.assertDelivered(t)
        msgs = rec.wait_for(1)
        self.assertEqual(msgs[0]["rcpt_tos"], ["ok@example.test"])    # the refused RCPT never went upstream
        cap = self.single_capture(m)
        self.assertFaults(cap, [("full", "reply", "reply", "rcpt")])
        self.assertEqual(cap.transactions[0]["rcpt_codes"], [250, 552])
        self.assertNotIn(b"RCPT TO:<over@FULL.example>", cap.bytes_of("upstream", "out"))

    def test_reply_and_close_at_rcpt(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "go-away"
type = "reply_and_close"
phase = "rcpt"
''', rec)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        c.send("RCPT TO:<%s>\r\n" % TO)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "eof", data)
        self.assertRegex(data, rb"\A421 4\.7\.0 [^\r\n]*\r\n\Z")
        cap = self.single_capture(m)
        self.assertFaults(cap, [("go-away", "reply_and_close", "reply_and_close", "rcpt")])
        self.assertNothingUpstream(rec, cap)

    def test_disconnect_without_reply_at_mail(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fin"
type = "disconnect"
phase = "mail"
''', rec)
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("fin", "disconnect", "disconnect", "mail")])
        self.assertNothingUpstream(rec, cap)
        self.assertNotIn(b"MAIL FROM", cap.bytes_of("upstream", "out"))

    def test_disconnect_with_reply_at_rcpt(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fin-421"
type = "disconnect"
phase = "rcpt"
code = 421
enhanced = "4.3.2"
text = "Service shutting down"
''', rec)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        c.send("RCPT TO:<%s>\r\n" % TO)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b"421 4.3.2 Service shutting down\r\n"))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("fin-421", "disconnect", "disconnect", "rcpt")])
        self.assertNothingUpstream(rec, cap)

    def test_disconnect_at_data_end_never_sends_the_dot(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fin-dot"
type = "disconnect"
phase = "data_end"
''', rec)
        c = self.open_transaction(m.port)
        c.send(make_message("<fin-dot@example.test>") + b".\r\n")
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("fin-dot", "disconnect", "disconnect", "data_end")])
        self.assertNothingUpstream(rec, cap)

    def test_reset_at_mail_gives_econnreset(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "rst"
type = "reset"
phase = "mail"
''', rec)
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("reset", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("rst", "reset", "reset", "mail")])
        self.assertNothingUpstream(rec, cap)

    def test_reset_comes_after_the_replies_before_it(self):
        # Pipelined MAIL + RCPT with a reset at RCPT: the client first gets MAIL's 250, then
        # the RST (a reset must not throw away what was already answered).
        m = self.relay('''
[[fault]]
name = "rst-rcpt"
type = "reset"
phase = "rcpt"
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (FROM, TO))
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "reset")
        self.assertTrue(data.startswith(b"250 "), data)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("rst-rcpt", "reset", "reset", "rcpt")])

    def test_stall_with_max_silent_then_session_ends(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "hang"
type = "stall"
phase = "mail"
max = "1500ms"
''', rec)
        c = self.greeted_client(m.port)
        start = time.monotonic()
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 20)
        elapsed = time.monotonic() - start
        self.assertEqual((outcome, data), ("eof", b""), "the client must get nothing, then the end")
        self.assertGreaterEqual(elapsed, 1.4, "the stall ended before its max")
        cap = self.single_capture(m)
        self.assertFaults(cap, [("hang", "stall", "stall", "mail")])
        # A newcomer's trial: the record said "nothing read until the client gives up" though
        # the relay ends it at its max; it says the max now.
        self.assertEqual([f["detail"] for f in fault_records(cap)],
                         ["stalled: no replies, nothing read for at most 1.5 s, then the relay ends it "
                          "(unless the client gives up first)"])
        self.assertNothingUpstream(rec, cap)
        self.assertNotIn(b"MAIL FROM", cap.bytes_of("upstream", "out"))

    def test_stall_still_records_what_the_client_sends(self):
        m = self.relay('''
[[fault]]
name = "hang"
type = "stall"
phase = "mail"
max = "1s"
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        time.sleep(0.2)
        c.send("NOOP are-you-there\r\n")
        outcome, data = recv_outcome(c.sock, 20)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertIn(b"NOOP are-you-there\r\n", cap.bytes_of("client", "in"))
        self.assertNotIn(b"NOOP", cap.bytes_of("upstream", "out"))

    def test_delay_at_reply(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "slow-rcpt"
type = "delay"
phase = "rcpt"
when = "reply"
delay = "300ms"
''', rec)
        t = self.send(m.port)
        self.assertReply(t.reply_to("RCPT TO"), 250)
        self.assertDelivered(t)
        rec.wait_for(1)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("slow-rcpt", "delay", "delay", "rcpt")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 300000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_a_destination_closing_behind_a_held_reply_ends_the_session(self):
        # A hostile trial (smtp-sink -Q RCPT: 421 and close at RCPT; swaks --pipeline): with
        # MAIL's 250 held, the client had 250, 421 and the relay's 421 for its pipelined DATA,
        # then nothing: the connection stayed open, its QUIT unread, until the idle timeout.
        sink = self.start_smtp_sink(args=["-Q", "RCPT"], dump=False)
        m = self.relay('''
[[fault]]
name = "slow-mail"
type = "delay"
phase = "mail"
when = "reply"
delay = "1s"
''', sink)
        c = self.greeted_client(m.port)
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        got = c.read_to_eof(10)
        self.assertEqual([r.code for r in parse_replies(got)], [250, 421, 421], got)
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "upstream_closed", cap.end)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])

    def test_delay_at_command(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "slow-mail"
type = "delay"
phase = "mail"
when = "command"
delay = "250ms"
''', rec)
        t = self.send(m.port)
        self.assertReply(t.reply_to("MAIL FROM"), 250)
        self.assertDelivered(t)
        rec.wait_for(1)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("slow-mail", "delay", "delay", "mail")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 250000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_data_end_reply_absorbs_the_message(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "too-big"
type = "reply"
phase = "data_end"
code = 552
enhanced = "5.3.4"
text = "Message too big"
''', rec)
        t = self.send(m.port, "--body", "absorbed-body-marker")
        self.assertReply(t.reply_to("DATA"), 354)
        eod = t.end_of_data_replies()
        self.assertEqual(len(eod), 1, t.text)
        self.assertReply(eod[0], 552, "5.3.4")
        cap = self.single_capture(m)
        self.assertFaults(cap, [("too-big", "reply", "reply", "data_end")])
        self.assertNothingUpstream(rec, cap)
        upstream_out = cap.bytes_of("upstream", "out")
        self.assertNotIn(b"absorbed-body-marker", upstream_out)
        self.assertIn(b"RSET\r\n", upstream_out)

    def test_blackhole_250_synthesized_nothing_delivered(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "void"
type = "blackhole"
''', rec)
        t = self.send(m.port)
        self.assertEqual(t.rc, 0, t.text)
        self.assertDelivered(t)    # as far as the client can tell
        cap = self.single_capture(m)
        self.assertFaults(cap, [("void", "blackhole", "blackhole", "data_end")])
        self.assertNothingUpstream(rec, cap)
        txn = cap.transactions
        self.assertEqual(len(txn), 1, txn)
        self.assertTrue(txn[0]["synthesized"])
        self.assertEqual(txn[0]["final_reply"]["code"], 250)
        self.assertEqual(txn[0]["outcome"], "blackholed")   # issue 14 item 12: not "delivered"
        doc = show_json(cap.path)
        self.assertTrue(doc["transactions"][0]["synthesized"])

    def test_verb_filter_masks_vrfy_and_upstream_answers_500(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fixup"
type = "verb_filter"
phase = ["ehlo", "helo", "mail", "rcpt", "data", "rset", "noop", "quit", "vrfy", "other"]
allow = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"]
''', rec)
        c = self.greeted_client(m.port)
        r = c.command("VRFY postmaster")
        self.assertReply(r, 500)
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("fixup", "verb_filter", "rewrite", "vrfy")])
        upstream_out = cap.bytes_of("upstream", "out")
        self.assertIn(b"\r\n" + b"X" * len("VRFY postmaster") + b"\r\n", upstream_out)
        self.assertNotIn(b"VRFY", upstream_out)
        # The 500 is the upstream's own answer (an upstream reply record), not the relay's.
        ups = [x for x in cap.of_type("reply") if x["leg"] == "upstream" and x["code"] == 500]
        self.assertEqual(len(ups), 1, cap.of_type("reply"))

    def test_verb_filter_without_phase_applies_to_any_command(self):
        # "verb_filter | any command": the phase key is not needed to filter every verb.
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fixup"
type = "verb_filter"
allow = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"]
''', rec)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("VRFY postmaster"), 500)
        self.quit(c)
        self.assertFaults(self.single_capture(m), [("fixup", "verb_filter", "rewrite", "vrfy")])

    def test_delay_uniform_min_max(self):
        m = self.relay('''
[[fault]]
name = "jittery"
type = "delay"
phase = ["mail", "rcpt"]
min = "50ms"
max = "250ms"
''')
        self.assertDelivered(self.send(m.port))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("jittery", "delay", "delay", "mail"), ("jittery", "delay", "delay", "rcpt")])
        for f in fault_records(cap):
            self.assertTrue(50000 <= f["planned_delay_us"] <= 250000, f)
            self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_delay_at_data_end_command_holds_the_dot(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "held-dot"
type = "delay"
phase = "data_end"
when = "command"
delay = "300ms"
''', rec)
        t = self.send(m.port)
        self.assertDelivered(t)
        self.assertEqual(len(rec.wait_for(1)), 1)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("held-dot", "delay", "delay", "data_end")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 300000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_an_upstream_rejection_during_data_answers_a_held_dot(self):
        # The destination gives up on the message after its 354 (552, as a size or content
        # filter does) while the fault holds the client's dot in mailtap. The upstream never
        # saw a dot, so its 552 is final for the message: the client gets it for its dot, the
        # dot never goes, and the transaction is rejected. Before, the 552 was dropped as
        # "unsolicited", the dot went, and the client got 451 "delivery status unknown" (a
        # permanent refusal turned into a retry) when the upstream hung up.
        def refuse_mid_data(conn, line):
            def later():
                time.sleep(0.3)
                try:
                    conn.sock.sendall(b"552 5.3.4 Message too big for system\r\n")
                    time.sleep(1.5)
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threading.Thread(target=later, daemon=True).start()
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        up = ScriptedAnswers({b"DATA": refuse_mid_data})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "held-dot"
type = "delay"
phase = "data_end"
when = "command"
delay = "1s"
''', up)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<refused-mid-data@example.test>") + b".\r\n")
        self.assertReply(c.reply(20), 552, "5.3.4")
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the upstream connection to close")
        self.assertEqual(conn.messages, [], "the upstream received an end of data")
        cap = self.single_capture(m)
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "rejected", t)
        self.assertEqual(t["final_reply"]["code"], 552, t)
        self.assertFalse(any("unsolicited" in n for n in cap.notes), cap.notes)

    def give_up_on_a_held_message(self, when, ending):
        """A relay whose rule holds the message's end or its reply (`when`) for 5 s; a client
        that sends its message and `ending`, then closes (a FIN) 2.2 s later, well past the
        relay's "long after its last bytes" (1 s), as a sender at its timeout does. Returns
        (the relay, the destination's recorder)."""
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "hold"
type = "delay"
phase = "data_end"
when = "%s"
delay = "5s"
''' % when, rec)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<gave-up-%s@example.test>" % when) + ending)
        time.sleep(2.2)
        c.sock.close()
        return m, rec

    def test_a_sender_that_gives_up_while_its_dot_is_held_gets_nothing_delivered(self):
        # A trial with real Postfix on both sides: the sender timed out and closed (a FIN, no
        # reset: the relay writes nothing during the hold) while the fault held its dot; the dot
        # went when the hold ended, the destination delivered, and the sender's retry delivered
        # the message again. Now the dot never goes and the transaction is aborted.
        m, rec = self.give_up_on_a_held_message("command", b".\r\n")
        cap = self.single_capture(m)
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "aborted", t)
        self.assertEqual(cap.end["reason"], "client_closed")
        time.sleep(3.3)   # past the hold's end: the dot still never goes
        self.assertEqual(rec.count(), 0, "the destination received the message")

    def test_a_sender_that_gives_up_after_its_pipelined_quit_is_noted_and_diagnosed(self):
        # A trial with real Postfix: it pipelines QUIT behind the dot, timed out while a fault
        # held the reply and closed; the destination had the message, the retry delivered it
        # again, and the capture said client_quit with no trace of the sender leaving.
        m, rec = self.give_up_on_a_held_message("reply", b".\r\nQUIT\r\n")
        cap = self.single_capture(m)
        self.assertEqual(len(rec.wait_for(1)), 1)
        self.assertIn("client closed its connection before the reply to its end of data, long after its pipelined QUIT",
                      cap.notes)
        r = run_mailtap(["diagnose", cap.path, "--json"], timeout=60)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("duplicate_delivery", [f["id"] for f in json.loads(r.stdout)["findings"]])

    def test_delay_at_data_end_reply(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "scan"
type = "delay"
phase = "data_end"
delay = "300ms"
''', rec)
        self.assertDelivered(self.send(m.port))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("scan", "delay", "delay", "data_end")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 300000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_pipelined_commands_after_a_disconnect_are_never_forwarded(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "fin"
type = "disconnect"
phase = "rcpt"
''', rec)
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (FROM, TO))
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "eof", data)
        self.assertEqual([r.code for r in parse_replies(data)], [250])    # MAIL's reply, then FIN
        cap = self.single_capture(m)
        upstream_out = cap.bytes_of("upstream", "out")
        self.assertNotIn(b"RCPT", upstream_out)
        self.assertNotIn(b"DATA", upstream_out)
        self.assertFaults(cap, [("fin", "disconnect", "disconnect", "rcpt")])

    def test_pipelined_commands_after_a_reset_are_never_forwarded(self):
        m = self.relay('''
[[fault]]
name = "rst"
type = "reset"
phase = "rcpt"
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (FROM, TO))
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "reset", data)
        cap = self.single_capture(m)
        upstream_out = cap.bytes_of("upstream", "out")
        self.assertNotIn(b"RCPT", upstream_out)
        self.assertNotIn(b"DATA", upstream_out)

    def test_a_data_end_disconnect_with_bdat_acts_at_the_messages_end_as_with_data(self):
        # A QA trial: with BDAT a data_end disconnect acted at the first chunk (421 to "BDAT 3",
        # the message never sent), while with DATA the message goes and the fault acts at the
        # dot. Now the chunks are relayed as ever, the LAST chunk's last byte never goes to the
        # destination, and the client gets the 421 in reply to its BDAT ... LAST.
        up = ChunkingDestination()
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "dc"
type = "disconnect"
phase = "data_end"
code = 421
enhanced = "4.4.2"
text = "Connection dropped"
''', up)
        c = self.open_envelope(m.port)
        body = make_message("<bdat-dc@example.test>", b"bdat-dc-marker\r\n")
        first, last = body[:10], body[10:]
        c.send(b"BDAT %d\r\n%s" % (len(first), first))
        self.assertReply(c.reply(10), 250)
        c.send(b"BDAT %d LAST\r\n%s" % (len(last), last))
        self.assertReply(c.reply(10), 421, "4.4.2")
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("dc", "disconnect", "disconnect", "data_end")])
        (conn,) = up.wait_for_connections(1)
        wait_until(conn.closed.is_set, 10, "the relay closing the destination's connection")
        self.assertEqual(conn.messages, [], "the destination never got the message's end")
        self.assertEqual(conn.chunks, [first], "the last chunk never came whole")
        self.assertTrue(bytes(conn.raw).endswith(b"BDAT %d LAST\r\n%s" % (len(last), last[:-1])), conn.raw)
        upstream_out = cap.bytes_of("upstream", "out")
        self.assertIn(last[:-1], upstream_out)
        self.assertNotIn(last, upstream_out)
        self.assertIn(last, cap.bytes_of("client", "in"))
        self.assertEqual(cap.transactions[0]["final_reply"]["code"], 421)

    def test_a_data_end_disconnect_on_a_pipelined_bdat_whose_recipient_was_refused_is_not_applied(self):
        # A review: "MAIL, RCPT, BDAT n LAST" in one write, the destination refusing the
        # recipient. With DATA the destination's 554 comes first and the rule is given back; with
        # BDAT it acted at the last byte before the RCPT's reply came (250, 550, then the rule's
        # 421) and was counted. The last byte now waits for the replies before it: the
        # destination refuses the message, and the rule is neither applied nor counted.
        up = ChunkingDestination(refused_recipient=b"nobody@")
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "dc"
type = "disconnect"
phase = "data_end"
code = 421
enhanced = "4.4.2"
text = "Connection dropped"
''', up)
        body = make_message("<bdat-refused@example.test>", b"bdat-refused-marker\r\n")
        for n, rcpt in enumerate(("nobody@example.test", TO), 1):
            refused = rcpt != TO
            with self.subTest(refused=refused):
                c = self.greeted_client(m.port)
                c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n%s"
                       % (FROM.encode(), rcpt.encode(), len(body), body))
                replies = c.replies(3, 10)
                if refused:
                    self.assertEqual([r.code for r in replies], [250, 550, 554], replies)
                    self.quit(c)
                    cap = m.wait_captures(n)[n - 1]
                    self.assertFaults(cap, [])
                    self.assertIn("fault dc not applied: no recipient was accepted", cap.notes)
                    self.assertEqual(cap.transactions[0]["outcome"], "rejected")
                    self.assertInjectedTotal(m, "dc", "disconnect", 0)
                else:
                    self.assertEqual([r.code for r in replies], [250, 250, 421], replies)
                    self.assertEqual(recv_outcome(c.sock, 10), ("eof", b""))
                    cap = m.wait_captures(n)[n - 1]
                    self.assertFaults(cap, [("dc", "disconnect", "disconnect", "data_end")])
                    self.assertInjectedTotal(m, "dc", "disconnect", 1)
        self.assertEqual([conn.messages for conn in up.wait_for_connections(2)], [[], []],
                         "the destination never got a message's end it could deliver")

    def test_data_end_reply_with_bdat(self):
        # The built-in sink offers CHUNKING; the decision is taken at the first BDAT.
        m = self.relay('''
[[fault]]
name = "too-big"
type = "reply"
phase = "data_end"
code = 552
enhanced = "5.3.4"
text = "Message too big"
''')
        c = self.open_envelope(m.port)
        body = make_message("<bdat@example.test>", b"bdat-body-marker\r\n")
        c.send(b"BDAT %d LAST\r\n" % len(body) + body)
        self.assertReply(c.reply(10), 552, "5.3.4")
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("too-big", "reply", "reply", "data_end")])
        self.assertNotIn(b"bdat-body-marker", cap.bytes_of("upstream", "out"))
        self.assertEqual(cap.transactions[0]["final_reply"]["code"], 552)

    def test_blackhole_of_a_bdat_message_pipelined_before_its_recipients_are_refused(self):
        # A BDAT LAST pipelined behind MAIL and RCPT, the destination then refusing the only
        # recipient: the blackhole's 250 went out behind the 550 (the DATA path answers 554).
        # The chunk's reply waits for the RCPT's: 503 5.5.1, the rule not applied, the
        # transaction settled; with the recipient accepted it is still blackholed.
        ehlo = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"
        no_such = b"550 5.1.1 <nobody@example.test>: Recipient address rejected\r\n"
        up = ScriptedAnswers({b"EHLO": ehlo, b"RCPT": lambda conn, line: no_such if b"nobody@" in line
                              else b"250 2.1.5 Ok\r\n"})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "void"
type = "blackhole"
''', up)
        body = make_message("<bdat-void@example.test>", b"bdat-void-marker\r\n")
        for n, rcpt in enumerate((TO, "nobody@example.test"), 1):
            refused = rcpt != TO
            with self.subTest(refused=refused):
                c = self.greeted_client(m.port)
                c.send(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nBDAT %d LAST\r\n%s"
                       % (FROM.encode(), rcpt.encode(), len(body), body))
                replies = c.replies(3, 10)
                if refused:
                    self.assertEqual([r.code for r in replies], [250, 550, 503], replies)
                    self.assertReply(replies[2], 503, "5.5.1")
                    # The transaction is over: the next MAIL opens one of its own.
                    self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
                    self.assertReply(c.command("RSET"), 250)
                else:
                    self.assertEqual([r.code for r in replies], [250, 250, 250], replies)
                self.quit(c)
                cap = m.wait_captures(n)[n - 1]
                read_together = any(b"RCPT TO" in record_bytes(r) and b"BDAT" in record_bytes(r)
                                    for r in cap.byte_records_on("client") if r["type"] == "bytes" and r["dir"] == "in")
                self.assertTrue(read_together, "the BDAT reached the relay with its RCPT")
                self.assertNotIn(b"bdat-void-marker", cap.bytes_of("upstream", "out"))
                self.assertIn(b"RSET\r\n", cap.bytes_of("upstream", "out"))
                txn = cap.transactions[0]
                if refused:
                    self.assertFaults(cap, [])
                    self.assertIn("fault void not applied: no recipient was accepted", cap.notes)
                    self.assertEqual((txn["outcome"], txn["final_reply"]["code"], txn["rcpt_codes"]),
                                     ("rejected", 503, [550]))
                    self.assertEqual(len(cap.transactions), 2, cap.transactions)   # and the MAIL after it
                else:
                    self.assertFaults(cap, [("void", "blackhole", "blackhole", "data_end")])
                    self.assertEqual((txn["outcome"], txn["final_reply"]["code"]), ("blackholed", 250))

    def test_a_503_to_a_chunk_before_the_last_leaves_the_next_message_whole(self):
        # A review of the pipelined-BDAT blackhole: a 503 to a chunk that was not the last left
        # the fault absorbing, so the client's next message (RFC 3030 2: after a refused chunk
        # it starts again) went upstream as "DATA\r\n.\r\n", empty, and was delivered.
        ehlo = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"
        up = ScriptedAnswers({b"EHLO": ehlo, b"RCPT": lambda conn, line: b"550 5.1.1 no such user\r\n"
                              if b"nobody@" in line else b"250 2.1.5 Ok\r\n"})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "void"
type = "blackhole"
sender = "void@*"
''', up)
        c = self.greeted_client(m.port)
        c.send(b"MAIL FROM:<void@example.test>\r\nRCPT TO:<nobody@example.test>\r\nBDAT 2\r\nab")
        self.assertEqual([r.code for r in c.replies(3, 10)], [250, 550, 503])
        self.assertReply(c.command("RSET"), 250)
        self.assertNextMessageWhole(c, up, "after-503")
        cap = self.single_capture(m)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["rejected", "delivered"], cap.transactions)
        self.assertFaults(cap, [])

    def test_an_rset_another_fault_answers_ends_a_chunked_message_a_fault_absorbs(self):
        # A review: the RSET that leaves an absorbed chunked message reached the hook that ends
        # it only when forwarded; answered by a reply rule, the message stayed absorbed and the
        # client's next message was answered by the stale fault (or went upstream empty).
        ehlo = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"
        up = ScriptedAnswers({b"EHLO": ehlo})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "void"
type = "blackhole"
sender = "void@*"

[[fault]]
name = "fake-rset"
type = "reply"
phase = "rset"
code = 250
enhanced = "2.0.0"
text = "Ok"
''', up)
        c = self.greeted_client(m.port)
        c.send(b"MAIL FROM:<void@example.test>\r\nRCPT TO:<%s>\r\nBDAT 2\r\nab" % TO.encode())
        self.assertEqual([r.code for r in c.replies(3, 10)], [250, 250, 250])
        self.assertReply(c.command("RSET"), 250)
        self.assertNextMessageWhole(c, up, "after-fake-rset")
        cap = self.single_capture(m)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["aborted", "delivered"], cap.transactions)
        self.assertFaults(cap, [("fake-rset", "reply", "reply", "rset")])

    def test_data_end_reply_narrowed_by_recipient(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "scan-reject"
type = "reply"
phase = "data_end"
recipient = "*@strict.example"
code = 554
enhanced = "5.7.1"
text = "Message content rejected"
''', rec)
        t = self.send(m.port, to="a@example.test,b@strict.example")
        self.assertReply(t.end_of_data_replies()[0], 554, "5.7.1")
        t = self.send(m.port, to="a@example.test")
        self.assertDelivered(t)
        self.assertEqual([x["rcpt_tos"] for x in rec.wait_for(1)], [["a@example.test"]])
        caps = m.wait_captures(2)
        self.assertEqual(rec.count(), 1)
        self.assertEqual([fault_summary(c) for c in caps], [[("scan-reject", "reply", "reply", "data_end")], []])

    def test_held_quit_reply_still_reaches_the_client_after_upstream_closes(self):
        # The built-in sink answers QUIT with 221 and closes at once; the 221 held by the
        # delay must still go out before the relay reports the upstream gone.
        m = self.relay('''
[[fault]]
name = "slow-bye"
type = "delay"
phase = "quit"
delay = "300ms"
''')
        c = self.greeted_client(m.port)
        c.send("QUIT\r\n")
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "eof", data)
        self.assertEqual([r.code for r in parse_replies(data)], [221], data)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("slow-bye", "delay", "delay", "quit")])

    def test_command_pipelined_after_a_held_dot_waits_for_it(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "held-dot"
type = "delay"
phase = "data_end"
when = "command"
delay = "300ms"
''', rec)
        c = self.open_transaction(m.port)
        message = make_message("<held@example.test>")
        c.send(message + b".\r\nMAIL FROM:<second@example.test>\r\n")
        first, second = c.replies(2, 10)
        self.assertReply(first, 250)
        self.assertIn("recorded as", first.text)       # the Recorder's reply to the message ...
        self.assertReply(second, 250)
        self.assertNotIn("recorded as", second.text)   # ... then its reply to MAIL
        self.assertEqual([x["data"] for x in rec.wait_for(1)], [message])
        self.quit(c)
        up = self.single_capture(m).bytes_of("upstream", "out")
        self.assertLess(up.index(b"\r\n.\r\n"), up.index(b"MAIL FROM:<second@example.test>"))

    def test_stall_at_data_end_nothing_delivered(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "hang-dot"
type = "stall"
phase = "data_end"
max = "1s"
''', rec)
        c = self.open_transaction(m.port)
        c.send(make_message("<stalled@example.test>") + b".\r\n")
        self.assertEqual(recv_outcome(c.sock, 20), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("hang-dot", "stall", "stall", "data_end")])
        self.assertNothingUpstream(rec, cap)

    def test_sessions_ended_by_a_fault_have_a_documented_end_reason(self):
        # captures/FORMAT.md lists every `end` reason; a fault that ends the session must use one.
        documented = documented_end_reasons()
        self.assertTrue({"client_quit", "fault", "fault_stall"} <= documented, documented)
        m = self.relay('''
[[fault]]
name = "fin"
type = "disconnect"
phase = "mail"
nth_session = 1

[[fault]]
name = "hang"
type = "stall"
phase = "mail"
max = "500ms"
nth_session = 2
''')
        for _ in range(2):
            c = self.greeted_client(m.port)
            c.send("MAIL FROM:<%s>\r\n" % FROM)
            self.assertEqual(recv_outcome(c.sock, 10), ("eof", b""))
            c.close()
        caps = m.wait_captures(2)
        self.assertEqual([fault_summary(c)[0][0] for c in caps], ["fin", "hang"])
        self.assertEqual([c.end["reason"] for c in caps], ["fault", "fault_stall"])
        for cap in caps:
            self.assertIn(cap.end["reason"], documented, cap.end)


class GreetingAndCapabilityFaults(FaultTest):
    """Faults at connect and banner, and the rewrites of what the client sees there and at EHLO."""

    def test_capabilities_strip_mask_and_size(self):
        m = self.relay('''
[[fault]]
name = "caps"
type = "capabilities"
strip = ["PIPELINING", "CHUNKING"]
mask = ["STARTTLS"]
size = 1000
''')
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO client.test")
        self.assertReply(r, 250)
        self.quit(c)
        cap = self.single_capture(m)
        upstream = [x for x in cap.of_type("reply") if x["leg"] == "upstream" and x["code"] == 250][0]
        self.assertIn("STARTTLS", r.texts[1:] + upstream["lines"], "nothing to mask: the test needs STARTTLS offered")
        keywords = [t.split(" ")[0].upper() for t in r.texts[1:]]
        self.assertNotIn("PIPELINING", keywords)
        self.assertNotIn("CHUNKING", keywords)
        self.assertNotIn("STARTTLS", keywords)
        self.assertIn("XXXXXXXA", r.texts[1:])
        self.assertIn("SIZE 1000", r.texts[1:])
        # Everything else passes unchanged.
        for line in upstream["lines"][1:]:
            kw = line.split(" ")[0].upper()
            if kw not in ("PIPELINING", "CHUNKING", "STARTTLS", "SIZE"):
                self.assertIn(line, r.texts[1:])
        self.assertFaults(cap, [("caps", "capabilities", "rewrite", "ehlo")])

    def test_a_capabilities_rule_that_changed_nothing_is_not_counted_beside_one_that_did(self):
        # A QA trial: when one rule's EHLO edit changed the reply, every rule contributing to it
        # got a fault record and counted, one stripping a keyword the server never offered too.
        up = ScriptedAnswers({})   # its EHLO reply offers PIPELINING, not SMTPUTF8
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "no-pipelining"
type = "capabilities"
strip = ["PIPELINING"]

[[fault]]
name = "no-utf8"
type = "capabilities"
strip = ["SMTPUTF8"]
''', up)
        c = self.connect(m.port)
        self.assertEqual(c.reply().code, 220)
        r = c.command("EHLO client.test")
        self.assertEqual(r.code, 250, r)
        self.assertNotIn("PIPELINING", [t.split(" ")[0].upper() for t in r.texts[1:]], r)
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("no-pipelining", "capabilities", "rewrite", "ehlo")])
        [record] = fault_records(cap)
        self.assertEqual(record["detail"], "EHLO reply stripped PIPELINING")
        self.assertInjectedTotal(m, "no-pipelining", "capabilities", 1)
        self.assertInjectedTotal(m, "no-utf8", "capabilities", 0)

    def test_capabilities_seen_by_swaks(self):
        m = self.relay('''
[[fault]]
name = "caps"
type = "capabilities"
strip = ["PIPELINING"]
mask = ["STARTTLS"]
''')
        t = self.send(m.port)
        ehlo = t.reply_to("EHLO")
        self.assertNotIn("PIPELINING", ehlo.texts)
        self.assertNotIn("STARTTLS", ehlo.texts)
        self.assertIn("XXXXXXXA", ehlo.texts)
        self.assertDelivered(t)

    def test_banner_mask(self):
        m = self.relay('''
[[fault]]
name = "pix-banner"
type = "banner"
mask = true
''')
        c = self.connect(m.port)
        banner = c.reply()
        self.quit(c)
        cap = self.single_capture(m)
        original = [x for x in cap.of_type("reply") if x["leg"] == "upstream" and x["code"] == 220][0]
        raw = b"\r\n".join(banner.lines).decode()
        self.assertRegex(raw, r"^[20 *]+$")
        self.assertEqual(raw, re.sub(r"[^20 ]", "*", "220 " + original["lines"][0]))
        self.assertFaults(cap, [("pix-banner", "banner", "rewrite", "banner")])

    def test_banner_text(self):
        m = self.relay('''
[[fault]]
name = "other-banner"
type = "banner"
text = "mx.other.example ESMTP Totally Different"
''')
        c = self.connect(m.port)
        banner = c.reply()
        self.assertReply(banner, 220)
        self.assertEqual(banner.lines, [b"220 mx.other.example ESMTP Totally Different"])
        self.quit(c)
        self.assertFaults(self.single_capture(m), [("other-banner", "banner", "rewrite", "banner")])

    def test_a_banner_rule_that_changed_nothing_is_not_counted_beside_one_that_did(self):
        # A QA trial: a text rule and a mask rule together were both recorded and counted when
        # either changed the greeting. The text here is the destination's own.
        up = ScriptedAnswers({}, greeting=b"220 scripted.test ESMTP\r\n")
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "same-text"
type = "banner"
text = "scripted.test ESMTP"

[[fault]]
name = "pix-banner"
type = "banner"
mask = true
''', up)
        c = self.connect(m.port)
        self.assertEqual(c.reply().lines, [b"220 ************* *****"])
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("pix-banner", "banner", "rewrite", "banner")])
        self.assertInjectedTotal(m, "pix-banner", "banner", 1)
        self.assertInjectedTotal(m, "same-text", "banner", 0)

    def test_reply_at_connect_554_then_503_and_221_upstream_never_contacted(self):
        up = self.start_scripted()
        m = self.relay('''
[[fault]]
name = "rdns"
type = "reply"
phase = "connect"
code = 554
enhanced = "5.7.1"
text = "Client host rejected"
''', up)
        c = self.connect(m.port)
        self.assertReply(c.reply(), 554, "5.7.1")
        self.assertReply(c.command("EHLO client.test"), 503)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 503)
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("rdns", "reply", "reply", "connect")])
        self.assertEqual(up.all_connections(), [])
        self.assertEqual(cap.bytes_of("upstream", "out"), b"")
        self.assertEqual(cap.bytes_of("upstream", "in"), b"")

    def test_reply_at_connect_swaks_sees_554(self):
        m = self.relay('''
[[fault]]
name = "rdns"
type = "reply"
phase = "connect"
code = 554
enhanced = "5.7.1"
text = "Client host rejected"
''')
        t = self.send(m.port)
        self.assertReply(t.greeting, 554, "5.7.1")
        self.assertReply(t.reply_to("QUIT"), 221)
        self.assertNotEqual(t.rc, 0)
        self.assertFaults(self.single_capture(m), [("rdns", "reply", "reply", "connect")])

    def test_reply_at_banner_replaces_the_greeting_upstream_gets_quit(self):
        up = self.start_scripted()
        m = self.relay('''
[[fault]]
name = "busy"
type = "reply"
phase = "banner"
code = 554
enhanced = "5.3.2"
text = "Not accepting mail"
''', up)
        c = self.connect(m.port)
        self.assertReply(c.reply(), 554, "5.3.2")
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 503)
        self.quit(c)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("busy", "reply", "reply", "banner")])
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 10, "the relay to leave the upstream")
        self.assertEqual(conn.commands, [b"QUIT"])

    def test_reply_and_close_at_banner_421(self):
        m = self.relay('''
[[fault]]
name = "overload"
type = "reply_and_close"
phase = "banner"
text = "Too many connections"
''')
        c = self.connect(m.port)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b"421 4.7.0 Too many connections\r\n"))
        self.assertFaults(self.single_capture(m), [("overload", "reply_and_close", "reply_and_close", "banner")])

    def test_stall_at_connect_no_greeting_then_closed(self):
        m = self.relay('''
[[fault]]
name = "tarpit"
type = "stall"
phase = "connect"
max = "1s"
''')
        c = self.connect(m.port)
        outcome, data = recv_outcome(c.sock, 20)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("tarpit", "stall", "stall", "connect")])

    def test_delay_at_banner(self):
        m = self.relay('''
[[fault]]
name = "slow-banner"
type = "delay"
phase = "banner"
delay = "300ms"
''')
        t = self.send(m.port)
        self.assertReply(t.greeting, 220)
        self.assertDelivered(t)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("slow-banner", "delay", "delay", "banner")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 300000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])

    def test_delay_at_connect(self):
        m = self.relay('''
[[fault]]
name = "slow-accept"
type = "delay"
phase = "connect"
delay = "300ms"
''')
        t = self.send(m.port)
        self.assertReply(t.greeting, 220)
        self.assertDelivered(t)
        cap = self.single_capture(m)
        self.assertFaults(cap, [("slow-accept", "delay", "delay", "connect")])
        f = fault_records(cap)[0]
        self.assertEqual(f["planned_delay_us"], 300000)
        self.assertGreaterEqual(f["actual_delay_us"], f["planned_delay_us"])


class UpstreamFaults(FaultTest):

    def test_upstream_unreachable_refused(self):
        up = self.start_scripted()
        m = self.relay('''
[[fault]]
name = "down"
type = "upstream_unreachable"
mode = "refused"
''', up)
        c = self.connect(m.port)
        self.assertReply(c.reply(), 421, "4.4.1")
        self.assertTrue(c.closed_by_peer(10))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("down", "upstream_unreachable", "unreachable", "connect")])
        self.assertEqual(up.all_connections(), [])

    def test_upstream_unreachable_refused_swaks(self):
        m = self.relay('''
[[fault]]
name = "down"
type = "upstream_unreachable"
''')
        t = self.send(m.port)
        self.assertReply(t.greeting, 421, "4.4.1")
        self.assertEqual(t.end_of_data_replies(), [])

    def test_upstream_unreachable_no_greeting(self):
        up = self.start_scripted()
        m = self.relay('''
[[fault]]
name = "hung"
type = "upstream_unreachable"
mode = "no_greeting"
''', up, config="[timeouts]\nupstream_greeting = 2\n")
        c = self.connect(m.port)
        outcome, data = recv_outcome(c.sock, 0.5)
        self.assertEqual((outcome, data), ("timeout", b""), "no greeting may come before the timeout")
        r = c.reply(15)
        self.assertReply(r, 421)
        self.assertTrue(c.closed_by_peer(10))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("hung", "upstream_unreachable", "unreachable", "connect")])
        self.assertEqual(up.all_connections(), [])
        # A newcomer trial: it was logged and counted as the upstream's failure, and the end
        # detail did not say it was injected (as mode "refused" does).
        self.assertIn("(injected by fault rule 'hung': no connection was attempted)", cap.end["detail"])
        counters = m.stop_with_counters()
        self.assertEqual(counters.get("errors", 0), 0, counters)


class SessionFaults(FaultTest):

    def payload(self):
        # ~40 KiB with leading dots, long lines and 8-bit bytes: any damage on the way shows.
        lines = []
        for i in range(600):
            lines.append(("%s%04d %s" % ("." if i % 7 == 0 else "", i, "abcdefghij" * 6)).encode())
        return (b"From: s@example.test\nTo: r@example.test\nSubject: shaped\n"
                b"Message-ID: <shaped@example.test>\n\n" + "caf\u00e9\n".encode() + b"\n".join(lines) + b"\n")

    def send_payload(self, m, rec):
        data = self.payload()
        path = self.write_file("message.eml", data)
        t = self.send(m.port, "--data", "@" + path)
        self.assertDelivered(t)
        msgs = rec.wait_for(1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0]["data"], dot_unstuff(swaks_wire_message(data)))
        return msgs[0]

    def test_throttle_message_arrives_intact(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "slow-link"
type = "throttle"
bytes_per_second = 200000
direction = "both"
''', rec)
        self.send_payload(m, rec)
        self.assertFaults(self.single_capture(m), [("slow-link", "throttle", "plan", "connect")])

    def test_throttle_longer_than_a_timeout_is_not_charged_to_the_peer(self):
        """The relay's own pacing is not the peer's delay: the upstream's end-of-data timer and
        the client's idle timer run from when the paced bytes were all written (RFC 5321
        4.5.3.2), not from when they were queued (a seventh trial: 'delivery status unknown'
        for a message whose dot had not yet left, and a client timed out while its reply was
        still being paced out to it)."""
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "slow-upstream"
type = "throttle"
bytes_per_second = 3000
direction = "to_upstream"
''', rec, config="[timeouts]\nupstream_data_end = 1\nupstream_reply = 1\n")
        c = self.open_transaction(m.port)
        body = b"".join(b"line %04d %s\r\n" % (i, b"x" * 50) for i in range(100))   # ~6 KiB: 2 s paced
        c.send(make_message("<paced@example.test>", body=body) + b".\r\n")
        self.assertReply(c.reply(15), 250)
        self.quit(c)
        self.assertEqual(len(rec.wait_for(1)), 1)
        cap = self.single_capture(m)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        # A newcomer's trial: the 2 s of pacing were counted as the upstream's at data_end,
        # and diagnose blamed a content scan at the destination. They are the relay's.
        [end] = [r for r in cap.of_type("stage") if r["name"] == "data_end"]
        self.assertGreater(end["duration_us"], 1_000_000, end)
        self.assertLess(end["upstream_us"], 500_000, end)

        slow_client = self.relay('''
[[fault]]
name = "slow-client"
type = "throttle"
bytes_per_second = 60
direction = "to_client"
''', rec, config="[timeouts]\nclient_idle = 1\n", name="slow-client")
        c = self.connect(slow_client.port, timeout=30)
        self.assertEqual(c.reply(30).code, 220)
        started = time.monotonic()
        r = c.command("EHLO client.test")   # the EHLO reply alone takes over a second at 60 B/s
        self.assertEqual(r.code, 250, r)
        self.assertGreater(time.monotonic() - started, 1.0)
        self.assertReply(c.command("NOOP"), 250)
        self.quit(c)

    def test_slice_with_split_dot_message_arrives_intact(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "chopped"
type = "slice"
segment = 1024
gap = "1ms"
direction = "both"
split_dot = true
''', rec)
        self.send_payload(m, rec)
        self.assertFaults(self.single_capture(m), [("chopped", "slice", "plan", "connect")])

    def test_split_dot_withhold_separate_sends_get_no_reply(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "cscds90792"
type = "split_dot_withhold"
''', rec)
        c = self.open_transaction(m.port)
        c.send(make_message("<split@example.test>") + b".")
        time.sleep(0.5)
        c.send(b"\r\n")
        outcome, data = recv_outcome(c.sock, 3)
        self.assertEqual((outcome, data), ("timeout", b""), "the end of data must be withheld")
        c.close()
        cap = self.single_capture(m)
        self.assertEqual(fault_summary(cap), [("cscds90792", "split_dot_withhold", "stall", "data_end")],
                         "one fault: the withheld dot (the rule armed at connect is a note, not a fault)")
        self.assertNothingUpstream(rec, cap)

    def test_split_dot_withhold_dot_sent_together_is_delivered(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "cscds90792"
type = "split_dot_withhold"
''', rec)
        c = self.open_transaction(m.port)
        message = make_message("<together@example.test>")
        c.send(message + b".\r\n")
        self.assertReply(c.reply(10), 250)
        self.quit(c)
        self.assertEqual([x["data"] for x in rec.wait_for(1)], [message])
        cap = self.single_capture(m)
        # Armed, never acted: no fault record (the index, diagnose and the API list rules that
        # acted, as the faults_injected metric counts them), a note that it was armed.
        self.assertFaults(cap, [])
        self.assertTrue(any("rule cscds90792 armed" in n for n in cap.notes), cap.notes)
        directory = os.path.dirname(cap.path)

        def search(*args):
            r = run_mailtap(["captures", "search", "--json", "--dir", directory, *args])
            self.assertEqual(r.returncode, 0, r)
            return [json.loads(line)["session"] for line in r.stdout.decode().splitlines()]
        self.assertTrue(wait_until(lambda: search() == [cap.header["session"]], 10), "never indexed")
        self.assertEqual(search("--rule", "cscds90792"), [], "a rule that never acted is found by --rule")

    def test_split_dot_withhold_acts_at_most_max_count_times_in_sessions_armed_at_once(self):
        """A review: split_dot_withhold reserved nothing when a session armed it, so every session
        armed before the first split dot withheld one, past max_count. It is reserved as it acts:
        with max_count = 1 and two sessions armed at once, the second split dot is passed on and
        its message delivered (policies/README.md "Counted when applied")."""
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "cscds90792"
type = "split_dot_withhold"
max_count = 1
''', rec)
        first = self.open_transaction(m.port)
        second = self.open_transaction(m.port)   # both armed before either dot splits

        def split_dot(c, message):
            c.send(message + b".")
            time.sleep(0.5)
            c.send(b"\r\n")

        split_dot(first, make_message("<split-first@example.test>"))
        self.assertEqual(recv_outcome(first.sock, 2), ("timeout", b""), "the first split dot is withheld")
        message = make_message("<split-second@example.test>")
        split_dot(second, message)
        self.assertReply(second.reply(10), 250)
        self.quit(second)
        first.close()
        self.assertEqual([x["data"] for x in rec.wait_for(1)], [message])
        caps = sorted(m.wait_captures(2), key=lambda cap: cap.header["session"])
        self.assertEqual([fault_summary(cap) for cap in caps],
                         [[("cscds90792", "split_dot_withhold", "stall", "data_end")], []])
        self.assertTrue(any("rule cscds90792 not applied: its max_count is used up" in n for n in caps[1].notes),
                        caps[1].notes)
        self.assertInjectedTotal(m, "cscds90792", "split_dot_withhold", 1)

    def test_session_wide_rule_with_nth_session(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "chopped"
type = "slice"
segment = 64
nth_session = 2
''', rec)
        for _ in range(3):
            self.assertDelivered(self.send(m.port))
        caps = m.wait_captures(3)
        self.assertEqual([fault_summary(c) for c in caps], [[], [("chopped", "slice", "plan", "connect")], []])
        self.assertEqual(len(rec.wait_for(3)), 3)


class StatefulFaults(FaultTest):

    def test_greylist_refuses_until_retry_after_then_accepts(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "grey"
type = "greylist"
retry_after = "1s"
''', rec)
        first_at = time.monotonic()
        t1 = self.send(m.port)
        self.assertReply(t1.reply_to("RCPT TO"), 451, "4.7.1")
        t2 = self.send(m.port)
        retry_at = time.monotonic()
        if retry_at - first_at >= 0.9:
            self.fail("the early retry took %.2f s: too slow to test a 1 s window" % (retry_at - first_at))
        self.assertReply(t2.reply_to("RCPT TO"), 451, "4.7.1")
        time.sleep(max(0.0, first_at + 1.3 - time.monotonic()))
        t3 = self.send(m.port)
        self.assertReply(t3.reply_to("RCPT TO"), 250)
        self.assertDelivered(t3)
        msgs = rec.wait_for(1)
        self.assertEqual(len(msgs), 1)
        caps = m.wait_captures(3)
        self.assertFaults(caps[0], [("grey", "greylist", "reply", "rcpt")])
        self.assertFaults(caps[1], [("grey", "greylist", "reply", "rcpt")])
        self.assertFaults(caps[2], [])

    def test_fail_then_pass_two_failures_then_delivery(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "ftp"
type = "fail_then_pass"
failures = 2
''', rec)
        codes = []
        for _ in range(3):
            t = self.send(m.port)
            eod = t.end_of_data_replies()
            self.assertEqual(len(eod), 1, t.text)
            codes.append((eod[0].code, eod[0].enhanced))
        self.assertEqual(codes, [(451, "4.3.0"), (451, "4.3.0"), (250, "2.0.0")])
        self.assertEqual(len(rec.wait_for(1)), 1)
        caps = m.wait_captures(3)
        self.assertEqual(rec.count(), 1)
        self.assertFaults(caps[0], [("ftp", "fail_then_pass", "reply", "data_end")])
        self.assertFaults(caps[1], [("ftp", "fail_then_pass", "reply", "data_end")])
        self.assertFaults(caps[2], [])

    def test_fail_then_pass_by_message_id_across_connections(self):
        # Keyed by Message-ID: the same message (same id, even from another sender) fails
        # twice, then passes; a failed attempt never reaches the upstream (its dot is withheld).
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "ftp-id"
type = "fail_then_pass"
key = "message_id"
failures = 2
''', rec)
        header = ["--header", "Message-Id: <retry-me@example.test>"]
        codes = []
        for frm in (FROM, "other@example.test", FROM):
            t = self.send(m.port, *header, frm=frm)
            eod = t.end_of_data_replies()
            self.assertEqual(len(eod), 1, t.text)
            codes.append((eod[0].code, eod[0].enhanced))
        self.assertEqual(codes, [(451, "4.3.0"), (451, "4.3.0"), (250, "2.0.0")])
        self.assertEqual(len(rec.wait_for(1)), 1)
        caps = m.wait_captures(3)
        self.assertEqual(rec.count(), 1)
        self.assertFaults(caps[0], [("ftp-id", "fail_then_pass", "reply", "data_end")])
        self.assertFaults(caps[1], [("ftp-id", "fail_then_pass", "reply", "data_end")])
        self.assertFaults(caps[2], [])
        # Another message from the same envelope is a first attempt of its own.
        t = self.send(m.port, "--header", "Message-Id: <another@example.test>")
        self.assertEqual(t.end_of_data_replies()[0].code, 451)

    def test_quota_third_mail_in_window_gets_452(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "quota"
type = "quota"
limit = 2
window = "60s"
''', rec)
        replies = [self.send(m.port).reply_to("MAIL FROM") for _ in range(3)]
        self.assertReply(replies[0], 250)
        self.assertReply(replies[1], 250)
        self.assertReply(replies[2], 452, "4.5.3")
        caps = m.wait_captures(3)
        self.assertEqual(rec.count(), 2)
        self.assertFaults(caps[0], [])
        self.assertFaults(caps[1], [])
        self.assertFaults(caps[2], [("quota", "quota", "reply", "mail")])

    def test_max_count_counted_across_sessions(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "twice"
type = "reply"
phase = "rcpt"
code = 550
enhanced = "5.1.1"
text = "User unknown"
max_count = 2
''', rec)
        codes = [self.send(m.port).reply_to("RCPT TO").code for _ in range(3)]
        self.assertEqual(codes, [550, 550, 250])
        caps = m.wait_captures(3)
        self.assertEqual([fault_summary(c) for c in caps],
                         [[("twice", "reply", "reply", "rcpt")]] * 2 + [[]])
        self.assertEqual(len(rec.wait_for(1)), 1)

    def test_max_count_is_spent_only_by_a_fault_that_was_applied(self):
        # A blackhole with max_count = 1 planned for a message whose only recipient the
        # destination refused is not applied (554 5.5.1, a note): it used up its budget and
        # mailtap_faults_injected_total said 1 though no capture had a fault. Only an applied
        # fault counts: the next message (same session) is blackholed, the one after it (a
        # new session) delivered, and the counter says 1, as the captures' records do.
        no_such = b"550 5.1.1 <nobody@example.test>: Recipient address rejected\r\n"
        up = ScriptedAnswers({b"RCPT": lambda conn, line: no_such if b"nobody@" in line else b"250 2.1.5 Ok\r\n"})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "void"
type = "blackhole"
max_count = 1
''', up)
        body = make_message("<max-count-void@example.test>", b"max-count-void-marker\r\n")

        def message(c, rcpt):
            self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
            rcpt_reply = c.command("RCPT TO:<%s>" % rcpt)
            data_reply = c.command("DATA")
            if data_reply.code != 354:
                return rcpt_reply.code, data_reply.code
            c.send(dot_stuff(body) + b".\r\n")
            return rcpt_reply.code, c.reply(10).code

        c = self.greeted_client(m.port)
        self.assertEqual(message(c, "nobody@example.test"), (550, 554))
        self.assertEqual(message(c, TO), (250, 250))   # blackholed: the rule acts here
        self.quit(c)
        c = self.greeted_client(m.port)
        self.assertEqual(message(c, TO), (250, 250))   # delivered: the budget is spent
        self.quit(c)
        caps = m.wait_captures(2)
        self.assertIn("fault void not applied: no recipient was accepted", caps[0].notes)
        self.assertEqual([fault_summary(c) for c in caps], [[("void", "blackhole", "blackhole", "data_end")], []])
        self.assertEqual([t["outcome"] for t in caps[0].transactions], ["rejected", "blackholed"])
        self.assertEqual([t["outcome"] for t in caps[1].transactions], ["delivered"])
        delivered = [msg for conn in up.all_connections() for msg in conn.messages]
        self.assertEqual(len(delivered), 1, delivered)
        self.assertInjectedTotal(m, "void", "blackhole", 1)

    def test_a_fault_reply_the_session_ended_before_sending_is_not_counted(self):
        # A review: a reply fault was recorded, and counted (its max_count spent), when queued,
        # so one queued behind a reply that never came counted though the client never had it.
        up = ScriptedAnswers({b"MAIL": lambda conn, line: b"" if b"silent@" in line else b"250 2.1.0 Ok\r\n"})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "once"
type = "reply"
phase = "rcpt"
code = 550
enhanced = "5.1.1"
text = "User unknown"
max_count = 1
''', up)
        c = self.greeted_client(m.port)
        c.send(b"MAIL FROM:<silent@example.test>\r\nRCPT TO:<%s>\r\n" % TO.encode())
        self.assertEqual(recv_outcome(c.sock, 1), ("timeout", b""), "no reply to MAIL, so none to the RCPT behind it")
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()   # RST: the client is gone before the 550 went out
        m.wait_captures(1)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 550, "5.1.1")   # its budget was never spent
        self.quit(c)
        caps = sorted(m.wait_captures(2), key=lambda cap: cap.header["session"])
        self.assertEqual([fault_summary(cap) for cap in caps], [[], [("once", "reply", "reply", "rcpt")]])
        self.assertInjectedTotal(m, "once", "reply", 1)

    def test_quota_421_closes_the_connection(self):
        m = self.relay('''
[[fault]]
name = "quota-close"
type = "quota"
limit = 1
window = "60s"
code = 421
''')
        self.assertReply(self.send(m.port).reply_to("MAIL FROM"), 250)
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual(outcome, "eof", data)
        [r] = parse_replies(data)
        self.assertReply(r, 421, "4.7.0")
        caps = m.wait_captures(2)
        self.assertFaults(caps[1], [("quota-close", "quota", "reply_and_close", "mail")])

    def test_quota_per_sender_counts_each_sender_apart(self):
        m = self.relay('''
[[fault]]
name = "quota"
type = "quota"
limit = 1
window = "60s"
per = "sender"
''')
        self.assertReply(self.send(m.port, frm="one@example.test").reply_to("MAIL FROM"), 250)
        self.assertReply(self.send(m.port, frm="two@example.test").reply_to("MAIL FROM"), 250)
        self.assertReply(self.send(m.port, frm="one@example.test").reply_to("MAIL FROM"), 452, "4.5.3")

    def test_greylist_triple_includes_the_recipient(self):
        m = self.relay('''
[[fault]]
name = "grey"
type = "greylist"
retry_after = "1s"
''')
        first_at = time.monotonic()
        self.assertReply(self.send(m.port, to="one@example.test").reply_to("RCPT TO"), 451, "4.7.1")
        time.sleep(max(0.0, first_at + 1.3 - time.monotonic()))
        # The first triple has waited long enough; a new recipient is a new triple.
        self.assertReply(self.send(m.port, to="one@example.test").reply_to("RCPT TO"), 250)
        self.assertReply(self.send(m.port, to="two@example.test").reply_to("RCPT TO"), 451, "4.7.1")

    def test_fail_then_pass_envelope_key_is_sender_and_recipients(self):
        m = self.relay('''
[[fault]]
name = "ftp"
type = "fail_then_pass"
failures = 1
''')
        codes = [self.send(m.port, to=to).end_of_data_replies()[0].code
                 for to in ("a@example.test", "b@example.test", "a@example.test")]
        self.assertEqual(codes, [451, 451, 250])     # b's envelope is a new key

    def test_fail_then_pass_sender_key_ignores_recipients(self):
        m = self.relay('''
[[fault]]
name = "ftp"
type = "fail_then_pass"
failures = 1
key = "sender"
''')
        codes = [self.send(m.port, to=to).end_of_data_replies()[0].code
                 for to in ("a@example.test", "b@example.test")]
        self.assertEqual(codes, [451, 250])


class Precedence(FaultTest):

    def test_reply_beats_delay_at_the_same_rcpt(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "a-delay"
type = "delay"
phase = "rcpt"
delay = "200ms"

[[fault]]
name = "b-reply"
type = "reply"
phase = "rcpt"
code = 550
enhanced = "5.1.1"
text = "User unknown"
''', rec)
        t = self.send(m.port)
        self.assertReply(t.reply_to("RCPT TO"), 550, "5.1.1")
        cap = self.single_capture(m)
        self.assertFaults(cap, [("b-reply", "reply", "reply", "rcpt")])
        self.assertNothingUpstream(rec, cap)

    def test_disconnect_beats_reply_at_the_same_rcpt(self):
        rec = self.start_recorder()
        m = self.relay('''
[[fault]]
name = "a-reply"
type = "reply"
phase = "rcpt"
code = 550
enhanced = "5.1.1"
text = "User unknown"

[[fault]]
name = "b-disconnect"
type = "disconnect"
phase = "rcpt"
''', rec)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        c.send("RCPT TO:<%s>\r\n" % TO)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("eof", b""))
        cap = self.single_capture(m)
        self.assertFaults(cap, [("b-disconnect", "disconnect", "disconnect", "rcpt")])
        self.assertNothingUpstream(rec, cap)

    def test_reset_beats_reply_and_close(self):
        m = self.relay('''
[[fault]]
name = "a-close"
type = "reply_and_close"
phase = "mail"

[[fault]]
name = "b-reset"
type = "reset"
phase = "mail"
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 10)
        self.assertEqual((outcome, data), ("reset", b""))
        self.assertFaults(self.single_capture(m), [("b-reset", "reset", "reset", "mail")])

    def test_stall_beats_delay(self):
        m = self.relay('''
[[fault]]
name = "a-delay"
type = "delay"
phase = "mail"
delay = "100ms"

[[fault]]
name = "b-stall"
type = "stall"
phase = "mail"
max = "1s"
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        outcome, data = recv_outcome(c.sock, 20)
        self.assertEqual((outcome, data), ("eof", b""))
        self.assertFaults(self.single_capture(m), [("b-stall", "stall", "stall", "mail")])

    def test_equal_verdicts_first_loaded_wins(self):
        m = self.relay('''
[[fault]]
name = "first"
type = "reply"
phase = "rcpt"
code = 550
enhanced = "5.1.1"
text = "first"

[[fault]]
name = "second"
type = "reply"
phase = "rcpt"
code = 551
enhanced = "5.1.6"
text = "second"
''')
        self.assertReply(self.send(m.port).reply_to("RCPT TO"), 550, "5.1.1")
        self.assertFaults(self.single_capture(m), [("first", "reply", "reply", "rcpt")])

    def test_equal_verdicts_first_scenario_file_wins(self):
        m = self.relay(['''
[[fault]]
name = "from-file-1"
type = "reply"
phase = "rcpt"
code = 550
''', '''
[[fault]]
name = "from-file-2"
type = "reply"
phase = "rcpt"
code = 551
'''])
        self.assertReply(self.send(m.port).reply_to("RCPT TO"), 550)
        self.assertFaults(self.single_capture(m), [("from-file-1", "reply", "reply", "rcpt")])

    def test_rewrite_adds_to_a_delay(self):
        m = self.relay('''
[[fault]]
name = "slow-ehlo"
type = "delay"
phase = "ehlo"
delay = "100ms"

[[fault]]
name = "caps"
type = "capabilities"
strip = ["PIPELINING"]
''')
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        r = c.command("EHLO client.test")
        self.assertReply(r, 250)
        self.assertNotIn("PIPELINING", r.texts)
        self.quit(c)
        self.assertEqual(sorted(fault_summary(self.single_capture(m))),
                         [("caps", "capabilities", "rewrite", "ehlo"), ("slow-ehlo", "delay", "delay", "ehlo")])

    def test_rewrite_not_applied_when_a_reply_wins(self):
        m = self.relay('''
[[fault]]
name = "caps"
type = "capabilities"
strip = ["PIPELINING"]

[[fault]]
name = "no-ehlo"
type = "reply"
phase = "ehlo"
code = 502
enhanced = "5.5.1"
text = "EHLO not supported"
''')
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 502, "5.5.1")
        self.quit(c)
        self.assertFaults(self.single_capture(m), [("no-ehlo", "reply", "reply", "ehlo")])

    def test_only_the_winning_rule_counts_toward_max_count(self):
        m = self.relay('''
[[fault]]
name = "once"
type = "reply"
phase = "rcpt"
code = 550
max_count = 1

[[fault]]
name = "first-session-fin"
type = "disconnect"
phase = "rcpt"
nth_session = 1
''')
        # Session 1: both match, the disconnect wins, "once" is not used up.
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        c.send("RCPT TO:<%s>\r\n" % TO)
        self.assertEqual(recv_outcome(c.sock, 10), ("eof", b""))
        # Session 2: "once" fires; session 3: it is used up.
        self.assertEqual(self.send(m.port).reply_to("RCPT TO").code, 550)
        self.assertEqual(self.send(m.port).reply_to("RCPT TO").code, 250)
        caps = m.wait_captures(3)
        self.assertEqual([fault_summary(c) for c in caps],
                         [[("first-session-fin", "disconnect", "disconnect", "rcpt")],
                          [("once", "reply", "reply", "rcpt")], []])

    def test_stateful_rule_counts_even_when_it_loses(self):
        # "Stateful types update their state whenever they match": the quota counts the MAIL
        # of session 1 although the disconnect wins there.
        m = self.relay('''
[[fault]]
name = "quota"
type = "quota"
limit = 1
window = "60s"

[[fault]]
name = "first-session-fin"
type = "disconnect"
phase = "mail"
nth_session = 1
''')
        c = self.greeted_client(m.port)
        c.send("MAIL FROM:<%s>\r\n" % FROM)
        self.assertEqual(recv_outcome(c.sock, 10), ("eof", b""))
        self.assertReply(self.send(m.port).reply_to("MAIL FROM"), 452, "4.5.3")


class Matchers(FaultTest):

    REFUSE_MAIL = '''
[[fault]]
name = "m"
type = "reply"
phase = "mail"
code = 550
enhanced = "5.7.1"
text = "refused"
'''

    def mail_code(self, m, **kw):
        return self.send(m.port, **kw).reply_to("MAIL FROM").code

    def test_nth_session(self):
        m = self.relay(self.REFUSE_MAIL + "nth_session = 2\n")
        self.assertEqual([self.mail_code(m) for _ in range(3)], [250, 550, 250])

    def test_nth_transaction(self):
        m = self.relay(self.REFUSE_MAIL + "nth_transaction = 2\n")
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<first@example.test>") + b".\r\n")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 550, "5.7.1")
        self.quit(c)
        self.assertFaults(self.single_capture(m), [("m", "reply", "reply", "mail")])

    def test_client_cidr(self):
        m = self.relay('''
[[fault]]
name = "elsewhere"
type = "reply"
phase = "mail"
client = ["192.0.2.0/24", "::1/128"]
code = 550

[[fault]]
name = "loopback"
type = "reply"
phase = "mail"
client = "127.0.0.0/8"
code = 551
''')
        self.assertEqual(self.mail_code(m), 551)
        self.assertFaults(self.single_capture(m), [("loopback", "reply", "reply", "mail")])

    def test_ehlo_glob(self):
        m = self.relay(self.REFUSE_MAIL + 'ehlo = "app-*.example"\n')
        for helo, code in (("APP-7.example", 550), ("web-1.example", 250)):
            c = self.connect(m.port)
            self.assertReply(c.reply(), 220)
            self.assertReply(c.command("EHLO " + helo), 250)
            self.assertEqual(c.command("MAIL FROM:<%s>" % FROM).code, code, helo)
            self.quit(c)

    def test_sender_domain_exact(self):
        m = self.relay(self.REFUSE_MAIL + 'sender_domain = "spam.example"\n')
        self.assertEqual(self.mail_code(m, frm="x@SPAM.example"), 550)
        self.assertEqual(self.mail_code(m, frm="x@sub.spam.example"), 250)

    def test_recipient_domain_exact(self):
        m = self.relay('''
[[fault]]
name = "dom"
type = "reply"
phase = "rcpt"
recipient_domain = "gone.example"
code = 550
enhanced = "5.1.2"
''')
        t = self.send(m.port, to="a@gone.example,b@sub.gone.example")
        self.assertEqual([r.code for r in t.replies_to("RCPT TO")], [550, 250])

    def test_recipients_more_than(self):
        m = self.relay('''
[[fault]]
name = "too-many"
type = "reply"
phase = "rcpt"
recipients_more_than = 2
code = 452
enhanced = "4.5.3"
text = "Too many recipients"
''')
        t = self.send(m.port, to="a@example.test,b@example.test,c@example.test,d@example.test")
        self.assertEqual([r.code for r in t.replies_to("RCPT TO")], [250, 250, 452, 452])

    def test_nth_recipient_at_the_reply_holds_that_rcpts_reply_pipelined_or_not(self):
        # A review: judged at its reply, the 2nd RCPT's rule held the 1st RCPT's reply, and none
        # when swaks pipelined the RCPTs. The destination tells the replies apart: the 1st
        # refused (550), the 2nd 250, the 3rd 251; the one held must be the 250.
        def rcpt(conn, line):
            local = line.split(b"<", 1)[1].split(b"@", 1)[0]
            return {b"r1": b"550 5.1.1 <r1> unknown\r\n", b"r2": b"250 2.1.5 <r2> ok\r\n"}.get(
                local, b"251 2.1.5 <r3> will forward\r\n")
        up = ScriptedAnswers({b"RCPT": rcpt})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "second-rcpt-slow"
type = "delay"
phase = "rcpt"
when = "reply"
nth_recipient = 2
delay = "200ms"
''', up)
        for n, pipelined in enumerate((False, True), 1):
            with self.subTest(pipelined=pipelined):
                t = self.send(m.port, *(["--pipeline"] if pipelined else []),
                              to="r1@example.test,r2@example.test,r3@example.test")
                self.assertDelivered(t)
                cap = m.wait_captures(n)[n - 1]
                read_together = any(b"<r1@" in record_bytes(r) and b"<r3@" in record_bytes(r)
                                    for r in cap.byte_records_on("client") if r["type"] == "bytes" and r["dir"] == "in")
                self.assertEqual(read_together, pipelined, "the RCPTs reached the relay in one read")
                self.assertEqual([r.code for r in cap.client_replies() if "<r" in r.text], [550, 250, 251])
                self.assertFaults(cap, [("second-rcpt-slow", "delay", "delay", "rcpt")])
                self.assertEqual(fault_records(cap)[0]["detail"], "reply 250 held")

    def test_address_longer_than(self):
        m = self.relay(self.REFUSE_MAIL + "address_longer_than = 30\n")
        self.assertEqual(self.mail_code(m, frm="short@example.test"), 250)
        self.assertEqual(self.mail_code(m, frm="a-rather-long-local-part@example.test"), 550)

    def test_line_longer_than(self):
        # "MAIL FROM:<short@example.test>\r\n" is 32 bytes with its CRLF.
        m = self.relay(self.REFUSE_MAIL + "line_longer_than = 40\n")
        self.assertEqual(self.mail_code(m, frm="short@example.test"), 250)
        self.assertEqual(self.mail_code(m, frm="longer-sender-name@example.test"), 550)

    def test_verb_and_argument_globs_at_phase_other(self):
        m = self.relay('''
[[fault]]
name = "etrn"
type = "reply"
phase = "other"
verb = "ETR?"
argument = "*.example"
code = 458
enhanced = "4.7.0"
text = "Unable to queue"
''')
        c = self.greeted_client(m.port)
        self.assertReply(c.command("ETRN mail.example"), 458, "4.7.0")
        self.assertNotEqual(c.command("ETRN mail.other").code, 458)
        self.quit(c)

    def test_for_window_ends(self):
        m = self.relay(self.REFUSE_MAIL + 'for = "1s"\n')
        loaded_by = time.monotonic()
        self.assertEqual(self.mail_code(m), 550)
        time.sleep(max(0.0, loaded_by + 1.3 - time.monotonic()))
        self.assertEqual(self.mail_code(m), 250)

    def test_after_window_starts(self):
        # The window opens `after` past the rule set's load, which lies between `started` and
        # the ready line; under a sanitizer the start alone can take seconds, so it is scaled.
        window = scaled(2.0)
        started = time.monotonic()
        m = self.relay(self.REFUSE_MAIL + 'after = "%dms"\n' % int(window * 1000))
        ready = time.monotonic()
        code = self.mail_code(m)
        if time.monotonic() - started >= window * 0.9:
            self.fail("the first session came too late to be before `after`")
        self.assertEqual(code, 250)
        time.sleep(max(0.0, ready + window + 0.5 - time.monotonic()))
        self.assertEqual(self.mail_code(m), 550)

    def test_until_in_the_past_never_matches(self):
        m = self.relay(self.REFUSE_MAIL + "until = 2001-01-01T00:00:00Z\n")
        self.assertEqual(self.mail_code(m), 250)
        self.assertFaults(self.single_capture(m), [])

    def test_tls_matcher(self):
        m = self.relay(self.REFUSE_MAIL + "tls = true\n")
        self.assertEqual(self.mail_code(m), 250)
        t = self.send(m.port, "--tls")
        self.assertEqual(t.reply_to("MAIL FROM").code, 550, t.text[-2000:])

    def test_probability_zero_never_fires(self):
        m = self.relay(self.REFUSE_MAIL + "probability = 0.0\n")
        self.assertEqual([self.mail_code(m) for _ in range(3)], [250, 250, 250])


FLAKY = '''
[[fault]]
name = "flaky"
type = "reply"
phase = "rcpt"
probability = 0.3
code = 451
enhanced = "4.3.0"
text = "Temporary problem"
'''

NTH_SESSION_DATA = '''
[[fault]]
name = "fourth"
type = "reply"
phase = "data"
nth_session = 4
code = 554
enhanced = "5.7.1"
text = "the fourth session"
'''


class Determinism(FaultTest):
    """20 sequential swaks sessions of 5 recipients each = 100 independent draws at p = 0.3.
    Two different seeds give the same pattern of refused recipients with probability
    (0.3^2 + 0.7^2)^100 = 0.58^100 < 1e-23, so "different" is a safe expectation."""

    SESSIONS = 20
    RCPTS = ",".join("r%d@example.test" % i for i in range(5))

    def run_traffic(self, seed, name):
        m = self.relay(FLAKY, seed=seed, name=name)
        for _ in range(self.SESSIONS):
            self.send(m.port, to=self.RCPTS)
        caps = m.wait_captures(self.SESSIONS, timeout=60)
        caps.sort(key=lambda c: c.header["started_mono_us"])
        faults = [(i,) + f for i, c in enumerate(caps)
                  for f in fault_summary(c, ("rule", "fault_type", "decision", "phase", "detail"))]
        patterns = [tuple(c.transactions[0]["rcpt_codes"]) for c in caps]
        seeds = [c.header["seed"] for c in caps]
        m.stop()
        return faults, patterns, seeds

    def test_same_seed_gives_the_same_faults(self):
        faults_a, patterns_a, seeds_a = self.run_traffic(4242, "run-a")
        faults_b, patterns_b, seeds_b = self.run_traffic(4242, "run-b")
        self.assertTrue(faults_a, "no fault fired in 100 draws at p=0.3")
        self.assertLess(len(faults_a), 100, "every draw fired at p=0.3")
        self.assertEqual(seeds_a, seeds_b)
        self.assertEqual(faults_a, faults_b)
        self.assertEqual(patterns_a, patterns_b)

    def test_a_capture_alone_gives_its_session_faults_again(self):
        """A relay with a random seed (newcomer trial: the capture held only the session's own
        seed, which no flag takes). Its fourth session's capture names the run's seed and the
        session's number, `show` says the command, and a relay started with them gives its one
        session the same draws and the same nth_session rule."""
        m = self.relay([FLAKY, NTH_SESSION_DATA], seed=0, name="random-seed")
        for _ in range(5):
            self.send(m.port, to=self.RCPTS)
        caps = m.wait_captures(5, timeout=60)
        m.stop()
        fourth = [c for c in caps if c.header.get("session_number") == 4]
        self.assertEqual(len(fourth), 1, [c.header for c in caps])
        header = fourth[0].header
        master = header["master_seed"]
        self.assertNotEqual(master, 0)
        self.assertEqual({c.header["master_seed"] for c in caps}, {master})
        command = "mailtap run --seed %d --first-session 4" % master
        shown = run_mailtap(["show", fourth[0].path])
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn(command, shown.stdout.decode())
        doc = show_json(fourth[0].path)
        self.assertEqual((doc["master_seed"], doc["session_number"]), (master, 4))
        expected = fault_summary(fourth[0], ("rule", "fault_type", "decision", "phase", "detail"))
        self.assertIn(("fourth", "reply", "reply", "data", "554 5.7.1 the fourth session"), expected)

        again = self.relay([FLAKY, NTH_SESSION_DATA], seed=master, args=["--first-session", "4"], name="again")
        self.send(again.port, to=self.RCPTS)
        [cap] = again.wait_captures(1, timeout=60)
        again.stop()
        self.assertEqual(cap.header["seed"], header["seed"])
        self.assertEqual(cap.header["session_number"], 4)
        self.assertEqual(fault_summary(cap, ("rule", "fault_type", "decision", "phase", "detail")), expected)
        self.assertEqual(cap.transactions[0]["rcpt_codes"], fourth[0].transactions[0]["rcpt_codes"])

    def test_different_seed_gives_different_faults(self):
        faults_a, patterns_a, seeds_a = self.run_traffic(4242, "run-a")
        faults_c, patterns_c, seeds_c = self.run_traffic(977, "run-c")
        self.assertNotEqual(seeds_a, seeds_c)
        self.assertNotEqual(patterns_a, patterns_c)

if __name__ == "__main__":
    unittest.main()
