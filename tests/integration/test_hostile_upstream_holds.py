"""A destination that leaves, or answers out of turn, while a fault rule holds part of the
conversation in mailtap (ARCHITECTURE.md "Leaving"; a hostile-upstream trial with real Postfix).

raw client -> mailtap (a [[fault]] scenario) -> ScriptedAnswers (harness.py). Each case asserts
the replies the client got (and when, against the hold it would otherwise have waited out), what
the destination received, and the capture: fault records, stages (`mailtap show --json`),
transactions and the end record; where it matters, `mailtap diagnose --json`.
"""

import contextlib
import json
import socket
import threading
import time
import unittest

from harness import (LOOPBACK, ScriptedAnswers, ScriptedConnection, ScriptedServer, fault_records, make_message,
                     parse_replies, run_mailtap, show_json, wait_until)
from test_faults import ChunkingDestination, FaultTest

FROM = "sender@example.test"
TO = "rcpt@example.test"

# A destination's own idle timeout, as Postfix's smtpd says it ("421 4.4.2 <name> Error:
# timeout exceeded") and closes.
TIMEOUT_421 = b"421 4.4.2 scripted.test Error: timeout exceeded\r\n"


def say_after_354(words, after=0.3, then_close=True):
    """A DATA answer: 354, then `words` `after` seconds later (the destination giving up on a
    message whose end it never got), then a hang-up."""
    def answer(conn, line):
        def later():
            time.sleep(after)
            try:
                if words:
                    conn.sock.sendall(words)
                if then_close:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        threading.Thread(target=later, daemon=True).start()
        return b"354 End data with <CR><LF>.<CR><LF>\r\n"
    return answer


HELD_DOT = '''
[[fault]]
name = "held-dot"
type = "delay"
phase = "data_end"
when = "command"
delay = "4s"
'''


HELD_MAIL_REPLY = '''
[[fault]]
name = "hold-mail-reply"
type = "delay"
phase = "mail"
when = "reply"
delay = "2s"
'''

class LeavingWhileTheDotIsHeld(FaultTest):

    def upstream(self, answers):
        up = ScriptedAnswers(answers)
        self.addCleanup(up.stop)
        return up

    def send_message_and_time_the_reply(self, m):
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<held-dot@example.test>") + b".\r\n")
        sent = time.monotonic()
        r = c.reply(20)
        return c, r, time.monotonic() - sent

    def data_end_stage(self, cap):
        [s] = [s for s in show_json(cap.path)["stages"] if s["name"] == "data_end"]
        return s

    def test_a_421_while_the_dot_is_held_reaches_the_client_at_once(self):
        # The trial: Postfix timed the session out (421) 0.3 s into a 4 s hold of the dot; the
        # client heard the 421 only when the hold ended, the fault record said "end of data held
        # before forwarding" of a dot that never went, and `captures show` counted the hold as
        # the sender's think time (data_end 0 ms).
        up = self.upstream({b"DATA": say_after_354(TIMEOUT_421)})
        m = self.relay(HELD_DOT, up)
        c, r, waited = self.send_message_and_time_the_reply(m)
        self.assertReply(r, 421, "4.4.2")
        self.assertLess(waited, 2.5, "the 421 waited for the hold to end")
        c.read_to_eof(20)
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the upstream connection to close")
        self.assertEqual(conn.messages, [], "the destination received an end of data")
        cap = self.single_capture(m)
        [f] = fault_records(cap)
        self.assertEqual(f["detail"], "end of data held; the upstream said 421 before it was forwarded")
        self.assertLess(f["actual_delay_us"], f["planned_delay_us"])
        [t] = cap.transactions
        self.assertEqual((t["outcome"], t["final_reply"]["code"]), ("tempfailed", 421), t)
        self.assertEqual(cap.end["reason"], "upstream_closed")
        # The hold is the relay's time in the dot's stage, not the sender's think time before it.
        s = self.data_end_stage(cap)
        self.assertGreaterEqual(s["duration_us"], 250000, s)
        self.assertEqual(s["relay_us"], s["duration_us"], s)
        self.assertLess(s["think_us"], 100000, s)
        # The destination's timeout came from the rule's hold: diagnose names the rule, not the
        # destination, as its cause.
        d = run_mailtap(["diagnose", cap.path, "--json"])
        self.assertEqual(d.returncode, 1, d.stdout)
        [f] = [f for f in json.loads(d.stdout)["findings"] if f["id"] == "service_closing"]
        self.assertEqual((f["source"], f["rule"], f["stage"]), ("injected", "held-dot", "data_end"), f)

    def test_a_hang_up_while_the_dot_is_held_is_answered_at_once(self):
        up = self.upstream({b"DATA": say_after_354(b"")})
        m = self.relay(HELD_DOT, up)
        c, r, waited = self.send_message_and_time_the_reply(m)
        self.assertReply(r, 451, "4.4.2")
        self.assertLess(waited, 2.5, "the 451 waited for the hold to end")
        cap = self.single_capture(m)
        [f] = fault_records(cap)
        self.assertEqual(f["detail"], "end of data held; the upstream was lost before it was forwarded")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])
        self.assertEqual(up.wait_for_connections(1)[0].messages, [])


class RefusingChunks(ScriptedServer):
    """A destination that offers CHUNKING, reads BDAT chunks by their counts and refuses each
    with 552 (`after` seconds after it came whole), as one whose size limit the message passed in
    its first chunk: RFC 3030 2, the chunks after a refused one are read and discarded, each
    answered. conn.chunks: each chunk that came whole."""

    REFUSAL = b"552 5.3.4 Message size exceeds fixed limit\r\n"

    def __init__(self, after=0.3, lifetime=60):
        self.after = after
        self.lifetime = lifetime
        super().__init__(ScriptedConnection)

    def _serve(self, conn):
        conn.chunks = []
        try:
            with contextlib.suppress(OSError), contextlib.closing(conn.sock) as sock:
                sock.sendall(b"220 chunking.test ESMTP\r\n")
                buf = b""
                for data in self.received(conn, self.lifetime):
                    buf += data
                    while b"\r\n" in buf:
                        line, rest = buf.split(b"\r\n", 1)
                        verb = line.split(b" ", 1)[0].upper()
                        if verb == b"BDAT":
                            size = int(line.split()[1])
                            if len(rest) < size:
                                break   # the chunk is not all in yet
                            conn.chunks.append(rest[:size])
                            buf = rest[size:]
                            conn.commands.append(line)
                            time.sleep(self.after)
                            sock.sendall(self.REFUSAL)
                            continue
                        buf = rest
                        conn.commands.append(line)
                        if verb == b"EHLO":
                            sock.sendall(b"250-chunking.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
                        elif verb == b"QUIT":
                            sock.sendall(b"221 2.0.0 Bye\r\n")
                            return
                        else:
                            sock.sendall(b"250 2.0.0 Ok\r\n")
        finally:
            conn.closed.set()


class LeavingWhileABdatEndIsHeld(FaultTest):

    def test_a_refused_earlier_chunk_drops_the_held_end_at_once(self):
        # A hostile trial: "BDAT 5" and "BDAT 5 LAST" in one write, a delay rule holding the last
        # byte, the destination's 552 to the first chunk 0.3 s in. The hold went on, and the last
        # byte went 4 s later to the destination that had failed the transaction; the rule stayed
        # reserved meanwhile. Now the end is never forwarded, and each BDAT has its reply at once.
        up = RefusingChunks()
        self.addCleanup(up.stop)
        m = self.relay(HELD_DOT, up)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        c.send(b"BDAT 5\r\nhelloBDAT 5 LAST\r\nworld")
        sent = time.monotonic()
        replies = parse_replies(c.read_to_eof(20))
        self.assertLess(time.monotonic() - sent, 2.5, "the replies waited for the hold to end")
        self.assertEqual([(r.code, r.enhanced) for r in replies], [(552, "5.3.4"), (552, "5.3.4"), (421, "4.4.2")])
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the upstream connection to close")
        self.assertTrue(bytes(conn.raw).endswith(b"BDAT 5 LAST\r\nworl"), conn.raw)
        self.assertEqual(conn.chunks, [b"hello"], "the destination got the last chunk whole")
        cap = self.single_capture(m)
        [f] = fault_records(cap)
        self.assertEqual(f["detail"], "end of data held; the upstream replied 552 before it was forwarded")
        self.assertLess(f["actual_delay_us"], f["planned_delay_us"])
        [t] = cap.transactions
        self.assertEqual((t["outcome"], t["final_reply"]["code"]), ("rejected", 552), t)
        self.assertEqual(cap.end["reason"], "fault")
        self.assertIn("'held-dot'", cap.end["detail"])

    def test_the_hold_of_a_bdat_end_that_went_is_the_relays_time(self):
        # A hostile trial: `captures show` counted a held BDAT end's hold as the destination's
        # time (upstream), where DATA's held dot's is the relay's.
        up = ChunkingDestination()
        self.addCleanup(up.stop)
        m = self.relay(HELD_DOT.replace('delay = "4s"', 'delay = "1s"'), up)
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        c.send(b"BDAT 5 LAST\r\nhello")
        self.assertReply(c.reply(20), 250, "2.0.0")
        self.quit(c)
        self.assertEqual(up.wait_for_connections(1)[0].messages, [b"hello"])
        cap = self.single_capture(m)
        [f] = fault_records(cap)
        self.assertEqual(f["detail"], "end of data held before forwarding")
        [s] = [s for s in show_json(cap.path)["stages"] if s["name"] == "bdat"]
        self.assertGreaterEqual(s["relay_us"], 900000, s)
        self.assertLess(s["upstream_us"], 500000, s)


class ClosingReplies(FaultTest):
    """What the client and the capture say when the destination closes with a reply."""

    def upstream(self, answers):
        up = ScriptedAnswers(answers)
        self.addCleanup(up.stop)
        return up

    def test_a_421_in_the_same_read_as_the_dots_250_ends_with_the_upstream_saying_421(self):
        # A hostile trial: the session's end detail was the 421's own text ("then bye").
        up = self.upstream({b".": b"250 2.0.0 Ok: queued as BOTH\r\n421 4.3.2 then bye\r\n"})
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<both@example.test>") + b".\r\n")
        self.assertEqual([(r.code, r.enhanced) for r in parse_replies(c.read_to_eof(20))],
                         [(250, "2.0.0"), (421, "4.3.2")])
        cap = self.single_capture(m)
        self.assertEqual((cap.end["reason"], cap.end["detail"]), ("upstream_closed", "upstream said 421"))
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])

    def test_data_pipelined_behind_a_221_to_rcpt_is_told_the_destination_is_closing(self):
        # A hostile trial: Postfix past its error limit said 221 to RCPT and closed; the DATA
        # pipelined behind it got the relay's "421 4.4.2 mailtap upstream connection lost".
        up = self.upstream({b"RCPT": b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"})
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.greeted_client(m.port)
        c.send(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (FROM, TO)).encode())
        replies = parse_replies(c.read_to_eof(20))
        self.assertEqual([r.code for r in replies], [250, 221, 421])
        self.assertEqual(replies[-1].texts[0], "4.4.2 mailtap upstream service closing transmission channel (it said 221)")
        cap = self.single_capture(m)
        self.assertEqual((cap.end["reason"], cap.end["detail"]), ("upstream_closed", "upstream said 221"))
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])

    def test_a_221_to_mail_whose_reply_a_delay_held_ends_the_session_once_it_is_out(self):
        # A hostile trial: MAIL, RCPT and DATA pipelined; the destination said 221 to MAIL and
        # closed while a delay (when = "reply") held MAIL's reply. The client had the 221 and the
        # relay's 421 when the hold ended, and then the session never ended, its next commands
        # unread, until the drain's deadline.
        up = self.upstream({b"MAIL": b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"})
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port),
                               args=["--scenario", self.write_file("hold.toml", HELD_MAIL_REPLY.encode())])
        c = self.greeted_client(m.port)
        c.send(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (FROM, TO)).encode())
        started = time.monotonic()
        replies = parse_replies(c.read_to_eof(10))
        self.assertEqual([r.code for r in replies], [221, 421])
        self.assertLess(time.monotonic() - started, 6, "closed once the 2 s hold was out, not at a deadline")
        cap = self.single_capture(m)
        self.assertEqual((cap.end["reason"], cap.end["detail"]), ("upstream_closed", "upstream said 221"))
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])

class RepliesInCommandOrder(FaultTest):

    def test_an_auth_challenge_waits_for_the_ehlo_reply_a_delay_holds(self):
        # A hostile trial: AUTH pipelined behind EHLO, a delay rule holding the EHLO reply; the
        # destination's 334 reached the client at once, ahead of the EHLO reply it was owed first.
        up = ScriptedAnswers({
            b"EHLO": b"250-scripted.test\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n",
            b"AUTH": b"334 VXNlcm5hbWU6\r\n",
            b"DXNLCG==": b"334 UGFzc3dvcmQ6\r\n",
            b"C2VJCMV0": b"235 2.7.0 Authentication successful\r\n",
        })
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "slow-ehlo"
type = "delay"
phase = "ehlo"
delay = "1s"
''', up)
        c = self.connect(m.port)
        self.assertEqual(c.reply().code, 220)
        c.send(b"EHLO client.test\r\nAUTH LOGIN\r\n")
        self.assertEqual(c.reply(20).code, 250, "the EHLO reply is owed first")
        self.assertReply(c.reply(20), 334)
        c.send(b"dXNlcg==\r\n")
        self.assertReply(c.reply(20), 334)
        c.send(b"c2VjcmV0\r\n")
        self.assertReply(c.reply(20), 235, "2.7.0")
        self.quit(c)
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertEqual([(f["rule"], f["phase"]) for f in fault_records(cap)], [("slow-ehlo", "ehlo")])


class LeavingWhileACommandIsHeld(FaultTest):

    def test_a_mail_held_when_the_sender_gives_up_has_its_transaction_record(self):
        # A hostile trial: the sender gave up (closed 2 s after its MAIL, well past the relay's
        # "long after its last bytes") while a delay rule held its MAIL; the capture had the
        # MAIL and the fault but no transaction record.
        up = ScriptedAnswers()
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "slow-mail"
type = "delay"
phase = "mail"
when = "command"
delay = "5s"
''', up)
        c = self.greeted_client(m.port)
        c.send(("MAIL FROM:<%s>\r\n" % FROM).encode())
        time.sleep(2.2)
        c.sock.close()
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "client_closed")
        [t] = cap.transactions
        self.assertEqual((t["mail_from"], t["rcpt_to"], t["outcome"], t["final_reply"]), (FROM, [], "aborted", None), t)
        self.assertEqual([(f["rule"], f["phase"]) for f in fault_records(cap)], [("slow-mail", "mail")])
        self.assertNotIn(b"MAIL FROM:<%s>" % FROM.encode(), up.wait_for_connections(1)[0].commands)

    def test_a_rcpt_held_when_the_destination_says_421_to_the_mail_is_in_its_record(self):
        # A hostile trial: MAIL and RCPT pipelined, a delay rule holding the RCPT, the
        # destination's 421 to the MAIL; the transaction record had no recipient.
        up = ScriptedAnswers({b"MAIL": TIMEOUT_421})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "slow-rcpt"
type = "delay"
phase = "rcpt"
when = "command"
delay = "5s"
''', up)
        c = self.greeted_client(m.port)
        c.send(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (FROM, TO)).encode())
        self.assertEqual([r.code for r in parse_replies(c.read_to_eof(20))], [421])
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "upstream_closed")
        [t] = cap.transactions
        self.assertEqual((t["mail_from"], t["rcpt_to"], t["outcome"], t["final_reply"]["code"]),
                         (FROM, [TO], "tempfailed", 421), t)
        self.assertEqual([(f["rule"], f["phase"]) for f in fault_records(cap)], [("slow-rcpt", "rcpt")])
        self.assertNotIn(b"RCPT TO:<%s>" % TO.encode(), up.wait_for_connections(1)[0].commands)

    def test_a_rcpt_held_past_a_550_to_its_mail_is_in_that_attempts_record(self):
        # A hostile trial: MAIL and RCPT pipelined, a delay rule holding the RCPT 1 s, the
        # destination's 550 to the MAIL. The RCPT went upstream when its hold ended, but the
        # refused MAIL's record listed no recipient (one pipelined and not held is listed).
        up = ScriptedAnswers({b"MAIL": b"550 5.7.1 Sender blocked\r\n",
                              b"RCPT": b"503 5.5.1 Error: need MAIL command\r\n"})
        self.addCleanup(up.stop)
        m = self.relay('''
[[fault]]
name = "slow-rcpt"
type = "delay"
phase = "rcpt"
when = "command"
delay = "1s"
''', up)
        c = self.greeted_client(m.port)
        c.send(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\n" % (FROM, TO)).encode())
        self.assertEqual(c.reply().code, 550)
        self.assertEqual(c.reply().code, 503)
        self.assertEqual(c.command("QUIT").code, 221)
        cap = self.single_capture(m)
        self.assertIn(b"RCPT TO:<%s>" % TO.encode(), up.wait_for_connections(1)[0].commands)
        [t] = cap.transactions
        self.assertEqual((t["mail_from"], t["rcpt_to"], t["outcome"], t["final_reply"]["code"]),
                         (FROM, [TO], "rejected", 550), t)
        self.assertEqual([(f["rule"], f["phase"]) for f in fault_records(cap)], [("slow-rcpt", "rcpt")])


if __name__ == "__main__":
    unittest.main()
