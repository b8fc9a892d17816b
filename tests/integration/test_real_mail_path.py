"""mailtap in a real mail path (issue 13): two real Postfix instances, mailtap between them.

Item 1, "TLS the way MTAs do it": Postfix A sends with smtp_tls_security_level = may and
relayhost = mailtap (run with its defaults) to Postfix B, which offers STARTTLS with a
self-signed certificate. Every message must be delivered exactly once into B's maildir, A's
log must show status=sent via mailtap, and mailtap's captures must record the upstream TLS
as not verified, saying why. Stricter settings (verify_upstream = "require", a pinned
fingerprint) fail closed; a failed upstream handshake falls back to plaintext on a new
connection, as Postfix itself does.

Peers: postfix_instance.py (real Postfix, each in its own directory), the scripted
ScriptedTlsUpstream of tls_upstream.py (a handshake that fails), SmtpClient and swaks.
"""

import os
import re
import unittest

from harness import (Capture, IntegrationTest, LOOPBACK, capture_has_end, run_mailtap, show_json,
                     wait_for_captures, wait_until)
from postfix_instance import ReceivingPostfix, SendingPostfix, cert_sha256_hex
from tls_upstream import ScriptedTlsUpstream

FROM = "sender@a.mail.test"
TO = "rcpt@example.test"


def message(n):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: real mail path %d\r\n"
            "Message-ID: <real-path-%d@a.mail.test>\r\n\r\nmessage number %d\r\n"
            % (FROM, TO, n, n, n)).encode()


def events_of(shown, kind, leg=None):
    return [e for e in shown["events"] if e["kind"] == kind and (leg is None or e["leg"] == leg)]


class RealMailPathTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.workdir, "state"))

    # -- peers
    def start_receiver(self):
        b = ReceivingPostfix()
        self.addCleanup(b.cleanup)
        return b.start()

    def start_sender(self, relay_port):
        a = SendingPostfix(relay_port)
        self.addCleanup(a.cleanup)
        return a.start()

    def start_relay(self, upstream_port, args=(), name="mailtap"):
        return self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream_port), args=list(args),
                                  name=name, env=self.env)

    def finished_captures(self, mailtap, at_least=1, timeout=60):
        """Every capture of mailtap, once each has its end record (A may hold a connection open
        for reuse a few seconds after its last message)."""
        wait_for_captures(mailtap.captures, at_least, timeout)
        wait_until(lambda: all(capture_has_end(p) for p in mailtap.captures_now()), timeout,
                   "every mailtap session to end")
        return [Capture(p) for p in mailtap.captures_now()]

    def assertSentVia(self, a, port, count):
        """A's log: `count` recipients status=sent through relay=127.0.0.1[127.0.0.1]:port."""
        sent = a.wait_for_log(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d,.*status=sent " % port, count)
        self.assertEqual(len(sent), count, a.maillog()[-4000:])
        self.assertEqual(a.log_matches(r"status=(?:deferred|bounced)"), [], a.maillog()[-4000:])

    def assertDeliveredOnce(self, b, numbers):
        """B's maildir holds each message exactly once."""
        b.wait_for_log(r"status=sent \(delivered to maildir\)", len(numbers))
        got = b.maildir_messages()
        ids = [m for blob in got for m in re.findall(rb"Message-ID: <(real-path-\d+)@a\.mail\.test>", blob)]
        self.assertEqual(sorted(ids), sorted(b"real-path-%d" % n for n in numbers), b.maillog()[-4000:])

    # ------------------------------------------------------------ the default path

    def test_postfix_to_postfix_through_mailtap_defaults(self):
        """Issue 13 "Done when": mailtap with its defaults between two real Postfix, the
        receiving one with a self-signed certificate: every message delivered exactly once."""
        b = self.start_receiver()
        mailtap = self.start_relay(b.port)
        a = self.start_sender(mailtap.port)
        numbers = list(range(1, 6))
        for n in numbers:
            a.inject(FROM, TO, message(n))
        self.assertSentVia(a, mailtap.port, len(numbers))
        self.assertDeliveredOnce(b, numbers)
        wait_until(lambda: not a.queue_files(), 30, "A's queue to empty")
        # Both legs were TLS: A to mailtap (A's log), mailtap to B (B's log).
        self.assertTrue(a.log_matches(r"TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d"
                                      % mailtap.port), a.maillog()[-4000:])
        self.assertTrue(b.log_matches(r"TLS connection established from"), b.maillog()[-4000:])

        delivered = 0
        for cap in self.finished_captures(mailtap):
            self.assertCaptureComplete(cap)
            shown = show_json(cap.path)
            txns = shown["transactions"]
            if not txns:
                continue
            delivered += sum(1 for t in txns if t["outcome"] == "delivered")
            ups = events_of(shown, "tls", "upstream")
            self.assertEqual(len(ups), 1, ups)
            u = ups[0]
            self.assertIs(u["verified"], False, u)
            self.assertIs(u["insecure"], False, u)
            self.assertEqual(u["verification"], "untrusted: self-signed certificate", u)
            self.assertIn("b.mail.test", u["peer_subject"], u)
            self.assertEqual(len(events_of(shown, "tls", "client")), 1)
            records = [r for r in cap.of_type("tls") if r["leg"] == "upstream"]
            self.assertEqual([r["verification"] for r in records], ["untrusted: self-signed certificate"])
            text = run_mailtap(["show", cap.path]).stdout.decode("utf-8", "replace")
            self.assertRegex(text, r"TLS upstream: .*not verified \(untrusted: self-signed certificate\)")
        self.assertEqual(delivered, len(numbers))

    # ------------------------------------------------------------ stricter settings

    def refused_at_starttls(self, mailtap):
        """A client's STARTTLS gets 454 4.7.0, then 421 and the close: nothing in plaintext."""
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("STARTTLS"), 454, "4.7.0")
        rest = c.read_to_eof(20)
        self.assertIn(b"421 ", rest)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(shown["end_reason"], "upstream_tls_failed")
        self.assertEqual(events_of(shown, "tls"), [])
        return shown

    def test_verify_upstream_require_fails_closed(self):
        b = self.start_receiver()
        config = self.write_file("mailtap.toml", b'[tls]\nverify_upstream = "require"\n')
        mailtap = self.start_relay(b.port, ["--config", config])
        shown = self.refused_at_starttls(mailtap)
        self.assertTrue(any("self-signed certificate" in e["text"] for e in events_of(shown, "note")),
                        events_of(shown, "note"))
        self.assertEqual(b.maildir_messages(), [])
        # The command-line flag does the same.
        mailtap = self.start_relay(b.port, ["--upstream-verify", "require"], name="mailtap-flag")
        self.refused_at_starttls(mailtap)

    def test_pinned_fingerprint(self):
        b = self.start_receiver()
        pin = "SHA256:" + cert_sha256_hex(b.cert).upper()   # any case, colons optional
        mailtap = self.start_relay(b.port, ["--upstream-fingerprint", pin])
        rc, out = self.swaks(mailtap.port, "--tls", "--from", FROM, "--to", TO)
        self.assertEqual(rc, 0, out[-3000:])
        b.wait_for_log(r"status=sent \(delivered to maildir\)", 1)
        shown = show_json(self.single_capture(mailtap).path)
        u = events_of(shown, "tls", "upstream")
        self.assertEqual(len(u), 1, u)
        self.assertIs(u[0]["verified"], True, u)
        self.assertEqual(u[0]["verification"], "verified: fingerprint matches the pin")

        wrong = "sha256:" + ":".join(["00"] * 32)
        mailtap = self.start_relay(b.port, ["--upstream-fingerprint", wrong], name="mailtap-wrong")
        shown = self.refused_at_starttls(mailtap)
        self.assertTrue(any("fingerprint mismatch" in e["text"] for e in events_of(shown, "note")),
                        events_of(shown, "note"))
        self.assertEqual(len(b.maildir_messages()), 1)
        # A refused pin is an upstream TLS failure in the summary, as a refused chain is (it
        # was counted on /metrics only).
        counters = mailtap.stop_with_counters()
        self.assertEqual(counters["upstream_tls_failed"], 1, counters)

    # ------------------------------------------------------------ handshake failure

    def test_failed_upstream_handshake_falls_back_to_plaintext(self):
        """The upstream offers STARTTLS, answers 220, then breaks the handshake. As Postfix
        would, mailtap opens a new plaintext connection, replays A's EHLO on it, and A (told
        454) carries on in plaintext: the message is delivered, once."""
        for behaviour in ("garbage", "close"):
            with self.subTest(behaviour=behaviour):
                up = ScriptedTlsUpstream(behaviour)
                self.addCleanup(up.stop)
                mailtap = self.start_relay(up.port, name="mailtap-" + behaviour)
                a = SendingPostfix(mailtap.port, name="a-" + behaviour)
                self.addCleanup(a.cleanup)
                a.start()
                a.inject(FROM, TO, message(1))
                self.assertSentVia(a, mailtap.port, 1)
                conns = up.wait_for_connections(2)
                self.assertEqual(len(conns), 2, [c.commands for c in conns])
                first, second = conns
                self.assertEqual(first.commands, [b"EHLO a.mail.test", b"STARTTLS"])
                self.assertEqual(second.commands[0], b"EHLO a.mail.test", second.commands)
                self.assertNotIn(b"STARTTLS", second.commands)
                self.assertEqual(len(second.messages), 1, second.commands)
                self.assertIn(b"Message-ID: <real-path-1@a.mail.test>", second.messages[0])
                self.assertEqual(first.messages, [])

                caps = self.finished_captures(mailtap)
                shown = [show_json(c.path) for c in caps]
                with_txn = [s for s in shown if s["transactions"]]
                self.assertEqual(len(with_txn), 1, [s["end_reason"] for s in shown])
                s = with_txn[0]
                self.assertEqual([t["outcome"] for t in s["transactions"]], ["delivered"])
                notes = [e["text"] for e in events_of(s, "note")]
                self.assertTrue(any("falling back to plaintext on a new upstream connection" in n for n in notes),
                                notes)
                self.assertEqual(events_of(s, "tls"), [])
                self.assertIn(454, [e["code"] for e in events_of(s, "reply", "client")])
                a.stop()


if __name__ == "__main__":
    unittest.main()
