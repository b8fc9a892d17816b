"""STARTTLS after HELO and before any hello, compared with a real Postfix (README "STARTTLS, in
this order").

HELO lists no extensions, so the relay has no EHLO reply to judge STARTTLS by, nor before any
hello. RFC 3207 4 asks for no EHLO before it, and Postfix's smtpd (smtpd_tls_security_level =
may) answers it 220 after HELO and before any hello. mailtap asks the destination rather than
refuse what it would accept: the same exchange through mailtap (mirror, its default) gets the
destination's answer, TLS on both legs, and the message is delivered over both.

Peers: a real Postfix destination (postfix_instance.ReceivingPostfix: STARTTLS with a
self-signed certificate); SmtpClient (raw bytes) and Python's ssl on the client side.
"""

import os
import re
import socket
import ssl
import threading
import time
import unittest
import urllib.request

from harness import IntegrationTest, LOOPBACK, show_json, wait_until
from postfix_instance import ReceivingPostfix

FROM = "sender@a.mail.test"
TO = "rcpt@example.test"


def unverified_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class StarttlsAfterHelo(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.workdir, "state"))
        self.b = ReceivingPostfix(name="helo")
        self.addCleanup(self.b.cleanup)
        self.b.start()

    def helo_then_starttls(self, port):
        """Banner, HELO (250), STARTTLS: the client and the reply to its STARTTLS."""
        c = self.connect(port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("HELO client.test"), 250)
        return c, c.command("STARTTLS")

    def test_mailtap_answers_starttls_after_helo_as_postfix_does(self):
        c, direct = self.helo_then_starttls(self.b.port)
        c.close()
        self.assertReply(direct, 220)

        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.b.port), env=self.env)
        c, relayed = self.helo_then_starttls(mailtap.port)
        # f6ac0eb answered it "503 5.5.1 Send EHLO first": refused what the destination takes.
        self.assertEqual(relayed.code, direct.code, relayed)
        c.sock = unverified_context().wrap_socket(c.sock, server_hostname="mailtap.test")
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        self.assertReply(c.command(b"Subject: after HELO\r\nMessage-ID: <after-helo@a.mail.test>\r\n\r\nhi\r\n."), 250)
        self.quit(c)

        self.b.wait_for_log(r"status=sent \(delivered to maildir\)")
        [delivered] = self.b.maildir_messages()
        self.assertIn(b"<after-helo@a.mail.test>", delivered)
        # Postfix's Received header says ESMTPS for a session under TLS: the upstream leg was.
        self.assertTrue(re.search(rb"by b\.mail\.test \(Postfix\) with ESMTPS id", delivered), delivered[:800])

        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(sorted(e["leg"] for e in shown["events"] if e["kind"] == "tls"), ["client", "upstream"])
        self.assertEqual([t["outcome"] for t in shown["transactions"]], ["delivered"])
        self.assertIn(b"HELO client.test\r\nSTARTTLS\r\n", cap.bytes_of("upstream", "out"))
        self.assertFalse(any(n.startswith("STARTTLS refused") for n in cap.notes), cap.notes)

    def test_clients_resetting_after_starttls_leave_no_session_open(self):
        """A hostile trial: clients that sent STARTTLS (after EHLO, or before any hello) and
        reset their connection (SO_LINGER 0) as Postfix's 220 came in left sessions open for good (sessions_active stuck, their
        captures open, max_sessions filling up). Bursts of them here; every session ends."""
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.b.port), env=self.env)
        admin = mailtap.admin_port()

        def active():
            with urllib.request.urlopen("http://%s:%d/metrics" % (LOOPBACK, admin), timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("mailtap_sessions_active "):
                        return float(line.split()[1])
            raise AssertionError("no mailtap_sessions_active in /metrics")

        def starttls_then_reset(pause):
            try:
                with socket.create_connection((LOOPBACK, mailtap.port), timeout=10) as s:
                    s.settimeout(10)
                    s.recv(1000)
                    s.sendall(b"EHLO client.test\r\n")
                    reply = b""
                    while b"\n250 " not in b"\n" + reply:
                        more = s.recv(4000)
                        if not more:
                            return
                        reply += more
                    s.sendall(b"STARTTLS\r\n")
                    time.sleep(pause)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass   # the relay may have closed first: what is asserted is its count

        for burst in range(4):
            clients = [threading.Thread(target=starttls_then_reset, args=(0.0005 * (i % 30),)) for i in range(30)]
            for t in clients:
                t.start()
            for t in clients:
                t.join(30)
        wait_until(lambda: active() == 0.0, 20, "every session ended (sessions_active 0)")


    def test_mailtap_answers_starttls_before_any_hello_as_postfix_does(self):
        """Postfix answers STARTTLS before any hello 220 too; f6ac0eb and b82072a answered it
        "503 5.5.1 Send EHLO first". Through mailtap it gets Postfix's answer, and the client's
        EHLO then goes to Postfix inside TLS."""
        c = self.connect(self.b.port)
        self.assertReply(c.reply(), 220)
        direct = c.command("STARTTLS")
        c.close()
        self.assertReply(direct, 220)

        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.b.port), env=self.env)
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        relayed = c.command("STARTTLS")
        self.assertEqual(relayed.code, direct.code, relayed)
        c.sock = unverified_context().wrap_socket(c.sock, server_hostname="mailtap.test")
        self.assertReply(c.command("EHLO client.test"), 250)
        self.quit(c)

        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        shown = show_json(cap.path)
        self.assertEqual(sorted(e["leg"] for e in shown["events"] if e["kind"] == "tls"), ["client", "upstream"])
        # The relay's STARTTLS first, nothing before it; the client's EHLO after the handshakes.
        self.assertEqual(cap.bytes_of("upstream", "out"), b"STARTTLS\r\nEHLO client.test\r\nQUIT\r\n")
        self.assertFalse(any(n.startswith("STARTTLS refused") for n in cap.notes), cap.notes)


if __name__ == "__main__":
    unittest.main()
