"""SIGTERM drain and the session limit (issue items 7 and 8).

Drain: idle sessions get 421 4.3.2, in-flight transactions finish, then mailtap exits 0 and
every capture is complete. max_sessions: the connection over the limit gets 421 4.3.2.
"""

import os
import signal
import socket
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, SCENARIOS_DIR, SmtpClient, closed_port, make_message, scaled,
                     wait_until)


class Drain(IntegrationTest):

    def test_sigterm_lets_the_busy_session_finish_and_closes_the_idle_one(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        message = make_message("<drained@example.test>", b"line of the in-flight message\r\n" * 2000)
        half = len(message) // 2

        busy = self.greeted_client(mailtap.port, "busy.test")
        self.assertReply(busy.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(busy.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(busy.command("DATA"), 354)
        busy.send(message[:half])                      # mid-transaction: body partly sent

        idle = self.greeted_client(mailtap.port, "idle.test")

        mailtap.signal(signal.SIGTERM)

        r = idle.reply(20)
        self.assertReply(r, 421, "4.3.2")
        self.assertTrue(idle.closed_by_peer(20), "the idle session was not closed")

        # Draining: no new sessions are accepted.
        with self.assertRaises(OSError):
            socket.create_connection((LOOPBACK, mailtap.port), timeout=5).close()

        busy.send(message[half:] + b".\r\n")
        self.assertReply(busy.reply(20), 250)
        # The transaction is over, so the drained session is told and closed.
        r = busy.reply(20)
        self.assertReply(r, 421, "4.3.2")
        self.assertTrue(busy.closed_by_peer(20))

        self.assertEqual(mailtap.wait(40), 0, "mailtap did not exit 0 after the drain")
        msgs = rec.wait_for(1)
        self.assertEqual([m["data"] for m in msgs], [message])

        caps = mailtap.wait_captures(2, timeout=10)
        by_helo = {}
        for cap in caps:
            self.assertCaptureComplete(cap)
            self.assertEqual(cap.end["reason"], "drain", cap.path)
            helo = [r["text"] for r in cap.of_type("command") if r["text"].startswith("EHLO")]
            by_helo[helo[0]] = cap
        self.assertEqual(sorted(by_helo), ["EHLO busy.test", "EHLO idle.test"])
        self.assertEqual(by_helo["EHLO idle.test"].transactions, [])
        t = by_helo["EHLO busy.test"].transactions
        self.assertEqual(len(t), 1)
        self.assertEqual((t[0]["outcome"], t[0]["message_id"], t[0]["size"]),
                         ("delivered", "<drained@example.test>", len(message)))

    def test_a_drained_sessions_quit_after_its_message_gets_221(self):
        # A newcomer's trial: the 421 came right after the message's 250, and swaks read it as
        # the answer to its QUIT. The QUIT that follows the last reply gets the 221 it asked for.
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        busy = self.greeted_client(mailtap.port, "busy.test")
        self.assertReply(busy.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(busy.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(busy.command("DATA"), 354)
        busy.send(b"Subject: drained\r\n\r\nbody\r\n")
        mailtap.signal(signal.SIGTERM)
        time.sleep(0.2)
        busy.send(b".\r\n")
        self.assertReply(busy.reply(20), 250)
        time.sleep(0.3)   # a client reading the 250 before it sends QUIT
        self.assertReply(busy.command("QUIT"), 221)
        self.assertTrue(busy.closed_by_peer(20))
        self.assertEqual(mailtap.wait(40), 0, "mailtap did not exit 0 after the drain")
        (cap,) = mailtap.wait_captures(1, timeout=10)
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])

    def test_sigterm_with_no_sessions_exits_0(self):
        mailtap = self.start_mailtap()
        c = self.greeted_client(mailtap.port)
        self.quit(c)
        self.assertTrue(c.closed_by_peer(10))
        mailtap.wait_captures(1)
        mailtap.signal(signal.SIGTERM)
        self.assertEqual(mailtap.wait(20), 0)


class RefusedAtTheGreeting(IntegrationTest):

    def test_a_session_refused_at_its_greeting_ends_once_the_client_has_gone(self):
        # A newcomer's trial: after a 421 greeting (an injected refusal or a real one) nothing
        # read the client's FIN, so the session waited out its whole 2 s linger, and a SIGTERM
        # then waited for that session although it was over.
        for how in ("injected", "real"):
            with self.subTest(how):
                if how == "injected":
                    m = self.start_mailtap(args=["--scenario", os.path.join(SCENARIOS_DIR, "destination-unreachable.toml")],
                                           name="injected")
                else:
                    m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, closed_port()), name="real")
                c = self.connect(m.port)
                self.assertReply(c.reply(), 421, "4.4.1")
                self.assertTrue(c.closed_by_peer(20), "the relay did not close after its 421")
                c.close()
                time.sleep(0.1)   # the FIN is on its way
                stopping = time.monotonic()
                counters = m.stop_with_counters()
                self.assertLess(time.monotonic() - stopping, scaled(1.2), "the drain waited for a session that was over")
                self.assertEqual(counters["sessions"], 1)


class SessionLimits(IntegrationTest):

    def first_reply(self, port):
        """The greeting of a fresh connection; an admitted probe leaves politely with QUIT."""
        c = SmtpClient(port, timeout=10)
        try:
            r = c.reply()
            if r.code == 220:
                c.command("QUIT")
                c.read_to_eof(10)
            return r
        finally:
            c.close()

    def test_third_connection_over_max_sessions_2(self):
        mailtap = self.start_mailtap(args=["--max-sessions", "2"])
        a = self.greeted_client(mailtap.port, "a.test")
        b = self.greeted_client(mailtap.port, "b.test")
        third = self.connect(mailtap.port)
        r = third.reply()
        self.assertReply(r, 421, "4.3.2")
        self.assertTrue(third.closed_by_peer(10), "the refused connection was left open")
        # The two admitted sessions are unaffected.
        self.assertReply(a.command("NOOP"), 250)
        self.assertReply(b.command("NOOP"), 250)
        # When one leaves properly, its slot is free again.
        self.assertReply(a.command("QUIT"), 221)
        self.assertTrue(a.closed_by_peer(10))
        wait_until(lambda: self.first_reply(mailtap.port).code == 220, 15,
                   "a new session to be admitted after QUIT")
        self.quit(b)
        # The refused connection left no capture; the admitted ones did.
        caps = mailtap.wait_captures(3, timeout=20)
        self.assertEqual(len(caps), 3)     # a, b and the probe; none for the refused one

    def test_client_hangup_frees_its_session_slot(self):
        # Regression test: before d050c40 a client that closed its connection without QUIT
        # was never released -- its capture stayed open and it kept counting against
        # max_sessions, so with --max-sessions 1 every later client got 421 4.3.2.
        mailtap = self.start_mailtap(args=["--max-sessions", "1"])
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        c.close()
        wait_until(lambda: self.first_reply(mailtap.port).code == 220, 15,
                   "the hung-up session's slot to be free again (max-sessions 1)")


if __name__ == "__main__":
    unittest.main()
