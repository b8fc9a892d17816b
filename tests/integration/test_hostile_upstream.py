"""A hostile or broken upstream (issue 11 item 3; SECURITY.md, "Threats and the tests that cover them").

raw client -> mailtap -> ScriptedAnswers (harness.py), an upstream whose replies each case
scripts. Whatever the upstream says, the client gets its refusal or a 4xx -- never a 250 the
upstream did not cleanly give -- and the relay's memory stays flat (VmHWM, its resident peak,
compared with its resident size before the case).

Covered elsewhere, not repeated here: a reply ending in a bare LF
(test_hostile_input.test_item3_upstream_reply_ending_in_bare_lf), bytes after the upstream's
220 to STARTTLS (test_tls.test_upstream_starttls_response_injection), a 5xx during DATA
(test_relay_defects.test_upstream_reply_during_data_is_final_and_nothing_more_is_forwarded).
"""

import json
import os
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, ScriptedAnswers, make_message, memory_bound_kib,
                     parse_replies, run_mailtap, wait_until)

# What a case may grow mailtap's resident peak by: the relay keeps at most a 4 KiB reply line
# and 256 lines (protocol/limits.hpp reply_line_cap, reply_lines_cap) whatever the upstream sends;
# what it received is still recorded, so the capture writer's queue may briefly hold a copy of
# it (~2 MB here). ~0.3 MiB measured.
FLAT_KIB = 8 * 1024


class HostileUpstream(IntegrationTest):

    def upstream(self, answers=None, **kw):
        up = ScriptedAnswers(answers, **kw)
        self.addCleanup(up.stop)
        return up

    def relay_to(self, up, name="mailtap"):
        return self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port), name=name)

    def upstream_conn(self, up, n=1):
        conn = up.wait_for_connections(n)[n - 1]
        wait_until(conn.closed.is_set, 20, "upstream connection %d to close" % n)
        return conn

    def assertMemoryFlat(self, mailtap, before_kib, what):
        grown = mailtap.hwm_kib() - before_kib
        self.assertLess(grown, memory_bound_kib(FLAT_KIB),
                        "%s: mailtap's resident peak grew by %d KiB" % (what, grown))

    def client_side_of_a_lost_upstream(self, c, command):
        """Sends `command`; the relay answers 421 4.4.2 and closes. Everything the client got."""
        c.send(command + b"\r\n")
        got = c.read_to_eof(20)
        replies = parse_replies(got)
        self.assertEqual([(r.code, r.enhanced) for r in replies], [(421, "4.4.2")], got[:300])
        return got

    def assertProtocolError(self, cap, detail):
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "upstream_protocol_error")
        self.assertEqual(cap.end["detail"], detail)

    # ------------------------------------------------------------ mixed codes

    def test_mixed_code_multiline_reply_to_rcpt_is_never_passed_on(self):
        # Protection: protocol/reply.cpp take_line refuses a multi-line reply whose lines carry
        # different codes (RFC 5321 4.2.1). Without it the client reads the first line's 250
        # and goes on to DATA with a recipient the upstream refused.
        up = self.upstream({b"RCPT": b"250-2.1.5 Ok\r\n550 5.1.1 No such user\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        got = self.client_side_of_a_lost_upstream(c, b"RCPT TO:<b@example.test>")
        self.assertNotIn(b"2.1.5", got)
        self.assertNotIn(b"No such user", got)
        self.assertEqual(self.upstream_conn(up).commands[-1], b"RCPT TO:<b@example.test>")
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "malformed reply line")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])

    def test_mixed_code_multiline_reply_to_the_dot_is_4xx_and_unknown(self):
        # The same protection at the end of data, where a 250 would mean "delivered": the
        # message went upstream, its reply is unreadable, so the outcome is unknown (451).
        up = self.upstream({b".": b"250-2.0.0 Ok: queued as MIXED\r\n554 5.7.1 Rejected\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<mixed-dot@example.test>") + b".\r\n")
        r = c.reply()
        self.assertReply(r, 451, "4.4.2")
        self.assertNotIn(b"MIXED", c.read_to_eof(20))
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "malformed reply line")
        [t] = cap.transactions
        self.assertEqual((t["outcome"], t["synthesized"]), ("unknown", True))
        self.assertTrue(any(n.startswith("ambiguous end of data") for n in cap.notes), cap.notes)

    # ------------------------------------------------------------ codes outside 2xx-5xx

    def test_reply_code_outside_2xx_to_5xx_is_refused(self):
        # Protection: take_line accepts only a first digit 2 to 5 (RFC 5321 4.2.1); a 1xx, 6xx
        # or 0xx reply is a protocol error, never relayed.
        for n, bad in enumerate((b"199 2.1.0 Ok", b"600 2.1.0 Ok", b"099 Ok", b"2x0 Ok", b"25"), start=1):
            with self.subTest(reply=bad):
                up = self.upstream({b"MAIL": bad + b"\r\n"})
                mailtap = self.relay_to(up, name="mailtap-%d" % n)
                c = self.greeted_client(mailtap.port)
                got = self.client_side_of_a_lost_upstream(c, b"MAIL FROM:<a@example.test>")
                self.assertNotIn(bad, got)
                self.assertProtocolError(self.single_capture(mailtap), "malformed reply line")

    def test_reply_code_outside_2xx_to_5xx_at_the_dot_is_4xx_and_unknown(self):
        up = self.upstream({b".": b"600 2.0.0 Ok: queued as SIXHUNDRED\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<six-hundred@example.test>") + b".\r\n")
        self.assertReply(c.reply(), 451, "4.4.2")
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "malformed reply line")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["unknown"])

    def test_a_221_to_the_dot_is_never_passed_on_as_an_acceptance(self):
        # A hostile trial: Postfix's smtp, the sending MTA, read the destination's "221 2.7.0
        # Error: I can break rules, too. Goodbye." to its dot as success (status=sent) and dropped
        # the message, while the capture said it was not delivered. RFC 5321 4.3.2: only 250.
        up = self.upstream({b".": b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<two-twenty-one@example.test>") + b".\r\n")
        self.assertReply(c.reply(), 451, "4.4.2")
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "upstream answered data_end with 221: the end of data and BDAT succeed only "
                                      "with 250 (RFC 5321 4.3.2, RFC 3030 2)")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["unknown"])

    def test_a_221_to_rcpt_is_the_destination_closing_and_diagnose_says_so(self):
        # A hostile trial: Postfix past its error limit says 221 to RCPT and closes; the client
        # gets it and the transaction is tempfailed, but diagnose found nothing at all.
        up = self.upstream({b"RCPT": b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 221)
        cap = self.single_capture(mailtap)
        self.assertEqual((cap.end["reason"], cap.end["detail"]), ("upstream_closed", "upstream said 221"))
        self.assertEqual([t["outcome"] for t in cap.transactions], ["tempfailed"])
        r = run_mailtap(["diagnose", cap.path, "--json"])
        self.assertEqual(r.returncode, 1, r.stdout)
        [f] = [f for f in json.loads(r.stdout)["findings"] if f["id"] == "service_closing"]
        self.assertEqual((f["severity"], f["source"], f["stage"], f["reply"]["code"]), ("error", "server", "rcpt", 221), f)

    # ------------------------------------------------------------ size

    def test_1mb_reply_line_is_cut_off_and_memory_stays_flat(self):
        # Protection: reply_line_cap (protocol/limits.hpp, 4 KiB) -- past it the upstream is
        # dropped; the line is never kept whole nor relayed.
        line = b"250 2.1.0 " + b"x" * (1024 * 1024) + b"\r\n"
        up = self.upstream({b"MAIL": line})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        before = mailtap.rss_kib()
        got = self.client_side_of_a_lost_upstream(c, b"MAIL FROM:<a@example.test>")
        self.assertNotIn(b"xxxx", got)
        self.assertProtocolError(self.single_capture(mailtap), "reply line too long")
        self.assertMemoryFlat(mailtap, before, "a 1 MB reply line")

    def test_100000_line_ehlo_reply_is_cut_off_and_memory_stays_flat(self):
        # Protection: reply_lines_cap (protocol/limits.hpp, 256 lines per reply). Without it
        # the relay collects every line and the client's EHLO is answered 250.
        reply = b"".join(b"250-EXTENSION%06d\r\n" % i for i in range(99_999)) + b"250 LAST\r\n"
        up = self.upstream({b"EHLO": reply})
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        before = mailtap.rss_kib()
        got = self.client_side_of_a_lost_upstream(c, b"EHLO client.test")
        self.assertNotIn(b"EXTENSION", got)
        self.assertProtocolError(self.single_capture(mailtap), "reply has too many lines")
        self.assertMemoryFlat(mailtap, before, "a 100,000-line EHLO reply")

    # ------------------------------------------------------------ unsolicited replies

    def test_unsolicited_reply_is_dropped_and_never_answers_a_later_command(self):
        # Protection: relay_fsm take_upstream_reply pairs a reply only with a command that went
        # upstream; one with no command waiting is dropped (a note says so). Were it queued,
        # it would answer the client's next command, MAIL, with the upstream's "250 unasked".
        up = self.upstream(greeting=b"220 scripted.test ESMTP\r\n250 2.0.0 unasked\r\n")
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250, "2.1.0")
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250, "2.1.5")
        self.assertReply(c.command("DATA"), 354)
        message = make_message("<after-unsolicited@example.test>")
        c.send(message + b".\r\n")
        self.assertReply(c.reply(), 250)
        self.quit(c)
        self.assertEqual(self.upstream_conn(up).messages, [message])
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertNotIn(b"unasked", cap.bytes_of("client", "out"))
        self.assertIn("unsolicited upstream reply dropped: 250", cap.notes)

    def test_a_flood_of_unsolicited_replies_closes_the_upstream(self):
        # A hostile trial: "250 u" sent 200,000 times after the greeting while the client sat
        # idle grew one capture to 37 MB (a note per reply) and the session never ended. Past
        # 10 replies no command asked for, the upstream is closed as a protocol error.
        up = self.upstream(greeting=b"220 scripted.test ESMTP\r\n" + b"250 u\r\n" * 5000)
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        got = c.read_to_eof(20)
        self.assertEqual([(r.code, r.enhanced) for r in parse_replies(got)], [(220, ""), (421, "4.4.2")], got[:300])
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "upstream sent more than 10 replies no command asked for")
        self.assertEqual(cap.notes.count("unsolicited upstream reply dropped: 250"), 10)

    def test_a_3xx_greeting_is_never_passed_on(self):
        # A hostile trial: "354 not a greeting" went to the client as its greeting, no note.
        up = self.upstream(greeting=b"354 not a greeting\r\n")
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        got = c.read_to_eof(20)
        self.assertEqual([(r.code, r.enhanced) for r in parse_replies(got)], [(421, "4.4.1")], got[:300])
        self.assertNotIn(b"not a greeting", got)
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "upstream greeted with 354, which is no greeting")

    def test_a_2xx_greeting_other_than_220_is_never_passed_on(self):
        # A hostile trial: "250 hello" greeted the client, and its message was relayed.
        up = self.upstream(greeting=b"250 hello\r\n")
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        got = c.read_to_eof(20)
        self.assertEqual([(r.code, r.enhanced) for r in parse_replies(got)], [(421, "4.4.1")], got[:300])
        self.assertNotIn(b"hello", got)
        cap = self.single_capture(mailtap)
        self.assertProtocolError(cap, "upstream greeted with 250, which is no greeting")

    def test_a_nul_in_a_reply_is_never_passed_on(self):
        # Protection: reply_parser (protocol/reply.cpp): RFC 5321 4.2 reply text has no NUL; a
        # client reading C strings would have read "250 o" (a hostile-peer trial).
        up = self.upstream({b"MAIL": b"250 o\x00k\r\n"})
        mailtap = self.relay_to(up)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        got = self.client_side_of_a_lost_upstream(c, b"MAIL FROM:<a@example.test>")
        self.assertNotIn(b"\x00", got)
        self.assertProtocolError(self.single_capture(mailtap), "NUL in reply line")

    def in_data_to_an_upstream_that_stops_reading(self, block_timeout):
        """A relay (upstream_data_block = `block_timeout`) to an upstream that answers DATA 354
        and reads nothing more, and a client inside DATA through it."""
        def stop_reading(conn, line):
            conn.sock.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            time.sleep(30)   # reads nothing meanwhile; the relay resets the connection first
            return b""
        up = self.upstream({b"DATA": stop_reading})
        config = os.path.join(self.workdir, "timeouts.toml")
        with open(config, "w") as f:
            f.write('[timeouts]\nupstream_data_block = "%s"\n' % block_timeout)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port), args=("--config", config))
        c = self.connect(mailtap.port, timeout=60)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250, "2.1.0")
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250, "2.1.5")
        self.assertReply(c.command("DATA"), 354)
        return mailtap, c

    def test_an_upstream_that_stops_reading_in_data_is_timed_out_and_the_client_gets_451(self):
        # Protection: the session's watchdog (abort_stalled_write) and relay_fsm::on_write_stalled.
        # The upstream answers 354 and reads nothing more; the relay's outbox fills, it stops
        # reading the client, and before this nothing timed out (RFC 5321 4.5.3.2.5: 3 minutes
        # per send of message data; here upstream_data_block is 2 s).
        mailtap, c = self.in_data_to_an_upstream_that_stops_reading("2s")
        line = b"x" * 998 + b"\r\n"
        # 8 MB: more than the sockets and the outbox to the upstream hold (the upstream reads
        # nothing, so its receive buffer is not grown; a send buffer is 4 MB at most), and less
        # than the 10,240,000 bytes a failed message is read for.
        c.send(line * 8000 + b".\r\n")
        self.assertReply(c.reply(), 451, "4.4.2")
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "upstream_timeout", (cap.end, cap.notes))
        self.assertIn("the upstream took no data for 2 s", cap.end["detail"])
        self.assertEqual(cap.transactions[-1]["outcome"], "tempfailed", cap.transactions)
        # A hostile trial: the 2 s the upstream held the sender back were its transfer time.
        body = [r for r in cap.of_type("stage") if r["name"] == "body"]
        self.assertEqual(len(body), 1, body)
        self.assertGreater(body[0]["upstream_us"], 1_500_000, body[0])
        self.assertLess(body[0]["client_us"], body[0]["duration_us"] - 1_500_000, body[0])

    def test_a_client_that_goes_on_after_its_upstream_stopped_reading_is_cut_off(self):
        # Protection: relay_fsm::bound_failed_message. A hostile trial: once upstream_data_block
        # had fired, the relay read and recorded the client's message to its dot however long
        # it went on (144 MB in 25 s), filling the capture directory faster than retention runs.
        # Past 10,240,000 bytes (Postfix's message_size_limit) after the loss: 421 and close.
        mailtap, c = self.in_data_to_an_upstream_that_stops_reading("1s")
        line = b"x" * 998 + b"\r\n"

        def flood():   # 100 MB and no dot, or until the relay's reset
            try:
                for _ in range(100):
                    c.sock.sendall(line * 1000)
            except OSError:
                pass
        sender = threading.Thread(target=flood, daemon=True)
        sender.start()
        self.assertReply(c.reply(), 421, "4.3.0")
        sender.join(60)   # the relay reads (and drops) what follows its close for 2 s, then resets
        self.assertFalse(sender.is_alive())
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "upstream_timeout", (cap.end, cap.notes))
        self.assertTrue(any("more bytes of it came without its end" in n for n in cap.notes), cap.notes)
        self.assertEqual(cap.transactions[-1]["outcome"], "aborted", cap.transactions)
        recorded = len(cap.bytes_of("client", "in"))
        self.assertGreater(recorded, 10_240_000)
        self.assertLess(recorded, 10_240_000 + 8_000_000, "at most the bound past what the upstream side held")

    def test_unsolicited_250_inside_data_is_never_the_messages_reply(self):
        # Protection: relay_fsm upstream_replied_in_data -- a reply after the 354 and before
        # the dot is final for the message, and a 2xx there accepts nothing (451 4.4.2). Were
        # it paired with the dot, the client would hear 250 for a message the upstream refused.
        up = self.upstream({b"DATA": b"354 go ahead\r\n250 2.0.0 Ok: queued as EARLY\r\n",
                            b".": b"554 5.7.1 Message refused\r\n"})
        mailtap = self.relay_to(up)
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<early-250@example.test>") + b".\r\n")
        r = c.reply()
        self.assertReply(r, 451, "4.4.2")
        self.assertNotIn(b"EARLY", r.text.encode())
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["detail"], "upstream replied during DATA")
        [t] = cap.transactions
        self.assertEqual((t["outcome"], t["final_reply"]["code"]), ("tempfailed", 451))

    def test_a_reply_to_bdat_before_its_chunk_is_in_is_final_and_nothing_more_goes_up(self):
        # Protection: relay_fsm upstream_replied_in_chunk -- a hostile trial found a reply to
        # BDAT taken as its chunk's reply however little of the chunk had gone: an early 250
        # reached the client (the record said delivered), and after an early 552 the rest of
        # the chunk went on, which an upstream that did not read it took as commands.
        ehlo = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"
        for early, code in ((b"250 2.0.0 Ok: queued as EARLY\r\n", 451), (b"552 5.3.4 Message too big\r\n", 552)):
            up = self.upstream({b"EHLO": ehlo, b"BDAT": early})
            mailtap = self.relay_to(up, name="bdat-%d" % code)
            c = self.greeted_client(mailtap.port)
            self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
            self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
            chunk = b"RSET\r\nMAIL FROM:<smuggled@evil.test>\r\nRCPT TO:<victim@example.test>\r\n"
            c.send(b"BDAT %d LAST\r\n" % len(chunk))
            commands = lambda: [cmd for conn in up.all_connections() for cmd in conn.commands]
            wait_until(lambda: any(cmd.startswith(b"BDAT") for cmd in commands()), 20, "the BDAT upstream")
            time.sleep(0.2)   # the early reply reaches the relay before the chunk does
            c.send(chunk)
            r = c.reply()
            self.assertEqual(r.code, code, r)
            self.assertNotIn(b"EARLY", r.text.encode())
            cap = self.single_capture(mailtap)
            self.assertCaptureComplete(cap)
            self.assertEqual((cap.end["reason"], cap.end["detail"]), ("upstream_protocol_error", "upstream replied during BDAT"))
            [t] = cap.transactions
            self.assertEqual((t["outcome"], t["final_reply"]["code"]), ("tempfailed" if code == 451 else "rejected", code))
            self.assertFalse([cmd for cmd in commands() if b"smuggled" in cmd], commands())
            self.assertNotIn(b"smuggled", cap.bytes_of("upstream", "out"))


if __name__ == "__main__":
    unittest.main()
