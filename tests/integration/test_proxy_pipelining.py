"""Commands a client of the PROXY-protocol listener writes with the balancer's header.

With --listen-proxy-protocol the relay reads the header and never a byte past it
(relay/proxy_listener.cpp); what the client wrote behind it in the same write is the session's,
read as an early talker's commands once the banner is out. A STARTTLS among them with bytes
after it is an injection (CVE-2011-0411, README "STARTTLS injection"), handled as on the plain
listener: the commands pipelined before it get their replies, nothing after it is read, the
session ends `starttls_injection`, and the capture holds everything the client sent.

Peers: the built-in sink; SmtpClient (raw bytes).
"""

import unittest

from harness import IntegrationTest, parse_replies, show_json

PROXY_V1 = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"
PIPELINED = b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n"


class PipelinedInjection(IntegrationTest):
    """EHLO, STARTTLS and MAIL in one write: EHLO answered, then the close."""

    def session(self, args, first_write):
        mailtap = self.start_mailtap(args=args)
        c = self.connect(mailtap.port)
        c.send(first_write)
        got = c.read_to_eof(15)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        return [r.code for r in parse_replies(got)], cap

    def check(self, codes, cap):
        # A hostile trial on the PROXY listener got [220] and the close: EHLO's reply was dropped.
        self.assertEqual(codes, [220, 250], "banner, EHLO's reply, nothing for STARTTLS or MAIL")
        self.assertEqual(cap.end["reason"], "starttls_injection", cap.end)
        self.assertEqual(cap.bytes_of("client", "in"), PIPELINED)
        self.assertEqual(cap.bytes_of("upstream", "out"), b"EHLO x\r\n")
        self.assertTrue(any(n.startswith("STARTTLS injection on the client leg") for n in cap.notes), cap.notes)
        self.assertEqual(show_json(cap.path)["end_reason"], "starttls_injection")

    def test_behind_the_proxy_header_ehlo_is_answered_then_the_session_ends(self):
        codes, cap = self.session(["--listen-proxy-protocol"], PROXY_V1 + PIPELINED)
        self.check(codes, cap)
        self.assertEqual(cap.header["client"], "192.0.2.10:40000")

    def test_on_the_plain_listener_the_same_write_is_answered_alike(self):
        codes, cap = self.session([], PIPELINED)
        self.check(codes, cap)


if __name__ == "__main__":
    unittest.main()
