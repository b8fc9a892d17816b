"""The client's identity (issue 13 items 2 and 3).

Item 3, "mailtap behind a load balancer": with --listen-proxy-protocol every connection
starts with a PROXY protocol header (haproxy's proxy-protocol.txt, v1 text or v2 binary).
The client it names is the one in the capture header and the one `client` matchers see; a
connection without a valid header gets 421 naming the problem, is closed, and is counted.

Item 2, "the client's identity reaches the upstream": with --upstream-identity proxy_v1 or
proxy_v2 mailtap starts each upstream connection with a PROXY header naming the client, for
a real Postfix with smtpd_upstream_proxy_protocol = haproxy; with xclient it sends XCLIENT
to a Postfix that offers it (smtpd_authorized_xclient_hosts). The proof is the delivered
message's Received header. To make the client differ from 127.0.0.1, the test client speaks
through --listen-proxy-protocol, claiming 192.0.2.x (RFC 5737 documentation addresses).

Peers: SmtpClient (raw bytes), real Postfix (postfix_instance.py).
"""

import re
import signal
import socket
import struct
import time
import urllib.request

from harness import IntegrationTest, LOOPBACK, wait_until
from postfix_instance import ReceivingPostfix

FROM = "sender@a.mail.test"
TO = "rcpt@example.test"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, sport, dst="198.51.100.1", dport=25):
    return ("PROXY TCP4 %s %s %d %d\r\n" % (src, dst, sport, dport)).encode()


def proxy_v2(src, sport, dst="198.51.100.1", dport=25):
    """PROXY over TCP/IPv4 (proxy-protocol.txt 2.2): version 2, command PROXY, AF_INET STREAM."""
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


PROXY_V2_LOCAL = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
REFUSED_SUMMARY = re.compile(r"listen_proxy_protocol: (\d+) connection\(s\) refused without a valid PROXY")


def proxy_headers_pending(mailtap):
    """The relay's gauge of connections still to send their PROXY header (admin/README.md)."""
    with urllib.request.urlopen("http://%s:%d/metrics" % (LOOPBACK, mailtap.admin_port()), timeout=10) as r:
        m = re.search(r"^mailtap_proxy_headers_pending (\d+)", r.read().decode(), re.M)
    return int(m.group(1)) if m else None


class ListenProxyProtocolTest(IntegrationTest):
    """--listen-proxy-protocol: the balancer's header names the client."""

    def proxied_session(self, mailtap, header, chunks=1, ehlo="client.test"):
        """Sends `header` (in `chunks` writes, 50 ms apart), then banner, EHLO, QUIT."""
        c = self.connect(mailtap.port)
        step = max(1, len(header) // chunks)
        for i in range(0, len(header), step):
            c.send(header[i:i + step])
            time.sleep(0.05)
        banner = c.reply()
        if banner.code == 220:
            self.assertReply(c.command("EHLO " + ehlo), 250)
        self.quit(c)
        return banner

    def test_v1_header_names_the_client_in_the_capture(self):
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol"])
        self.assertReply(self.proxied_session(mailtap, proxy_v1("192.0.2.10", 40000)), 220)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["client"], "192.0.2.10:40000")
        # The header is the balancer's, not the client's: it is not part of the conversation.
        self.assertTrue(cap.bytes_of("client", "in").startswith(b"EHLO client.test\r\n"), cap.bytes_of("client", "in"))

    def test_v2_header_in_pieces_names_the_client(self):
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol"])
        self.assertReply(self.proxied_session(mailtap, proxy_v2("192.0.2.20", 40001), chunks=3), 220)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["client"], "192.0.2.20:40001")

    def test_an_ipv4_mapped_client_is_named_by_its_ipv4_address(self):
        # A dual-stack balancer names an IPv4 client ::ffff:a.b.c.d: recorded so, it was another
        # client than the same address connecting directly (a hostile trial).
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol"])
        header = b"PROXY TCP6 ::ffff:10.9.8.7 ::ffff:198.51.100.1 4242 25\r\n"
        self.assertReply(self.proxied_session(mailtap, header), 220)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["client"], "10.9.8.7:4242")

    def test_v2_local_keeps_the_connection_address(self):
        """LOCAL (a balancer's health check) names no client: the connection's own is used."""
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol"])
        self.assertReply(self.proxied_session(mailtap, PROXY_V2_LOCAL), 220)
        cap = self.single_capture(mailtap)
        self.assertTrue(cap.header["client"].startswith("127.0.0.1:"), cap.header)

    def test_client_matchers_see_the_proxied_client(self):
        scenario = self.write_file("block.toml", b'[[fault]]\nname = "block-doc-net"\ntype = "reply"\n'
                                                 b'phase = "connect"\nclient = "192.0.2.0/24"\ncode = 554\n'
                                                 b'enhanced = "5.7.1"\ntext = "Client host rejected"\n')
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol", "--scenario", scenario])
        self.assertReply(self.proxied_session(mailtap, proxy_v1("192.0.2.10", 40000)), 554, "5.7.1")
        self.assertReply(self.proxied_session(mailtap, proxy_v1("203.0.113.5", 40000)), 220)

    def refused(self, mailtap, data, timeout=20):
        """Sends data (if any); the reply must be 421 4.7.0 and then the close."""
        c = self.connect(mailtap.port, timeout=timeout)
        if data:
            c.send(data)
        r = c.reply()
        self.assertReply(r, 421, "4.7.0")
        self.assertTrue(c.closed_by_peer(10), "mailtap did not close the refused connection")
        return r.text

    def test_connection_without_a_valid_header_is_refused_and_counted(self):
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol"])
        self.assertIn("expects a PROXY protocol header: not a PROXY protocol header",
                      self.refused(mailtap, b"EHLO client.example.test\r\n"))
        # Shorter than any header: refused at once, not after the 5 s (a fifth trial).
        started = time.monotonic()
        self.assertIn("not a PROXY protocol header", self.refused(mailtap, b"EHLO x\r\n"))
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("no CRLF within 107 bytes", self.refused(mailtap, b"PROXY UNKNOWN " + b"x" * 120))
        self.assertIn("bad signature", self.refused(mailtap, V2_SIGNATURE[:6] + b"QUITXX\x21\x11\x00\x0c"))
        self.assertIn("an address is not IPv4", self.refused(mailtap, proxy_v1("192.0.2.300", 1)))
        started = time.monotonic()
        self.assertIn("no PROXY protocol header within 5 s", self.refused(mailtap, b""))
        self.assertGreaterEqual(time.monotonic() - started, 4.5)
        # A good connection after them is served.
        self.assertReply(self.proxied_session(mailtap, proxy_v1("192.0.2.10", 40000)), 220)
        caps = mailtap.wait_captures(1)
        self.assertEqual([c.header["client"] for c in caps], ["192.0.2.10:40000"])
        mailtap.signal(signal.SIGTERM)
        self.assertEqual(mailtap.wait(40), 0)
        counts = REFUSED_SUMMARY.findall(mailtap.stderr_text())
        self.assertEqual(counts, ["6"], mailtap.stderr_text()[-2000:])

    def test_connections_waiting_for_their_header_count_toward_max_sessions(self):
        """Silent connections hold their slot while the header is awaited: beyond max_sessions
        the next one gets 421 4.3.2 at once, not a session (nor a wait of proxy_header_timeout)."""
        mailtap = self.start_mailtap(args=["--listen-proxy-protocol", "--max-sessions", "2"])
        silent = [self.connect(mailtap.port, timeout=20) for _ in range(2)]
        # Both accepted and waiting for a header (a fixed pause was too short on a loaded machine).
        wait_until(lambda: proxy_headers_pending(mailtap) == 2, 10, "both silent connections waiting for a header")
        started = time.monotonic()
        c = self.connect(mailtap.port, timeout=20)
        c.send(proxy_v1("192.0.2.10", 40000))
        self.assertReply(c.reply(), 421, "4.3.2")
        self.assertLess(time.monotonic() - started, 2.0)
        for s in silent:
            self.assertReply(s.reply(), 421, "4.7.0")   # after proxy_header_timeout
            self.assertTrue(s.closed_by_peer(10))
        # Their slots are free again once they are closed.
        def banner_code():
            probe = self.connect(mailtap.port, timeout=20)
            probe.send(proxy_v1("192.0.2.11", 40001))
            code = probe.reply().code
            probe.close()
            return code == 220
        wait_until(banner_code, 10, "a session after the silent connections were refused")

    def test_without_the_setting_a_proxy_header_is_an_unknown_command(self):
        """Off by default: the header is not read, so it never reaches the upstream as a command."""
        mailtap = self.start_mailtap()
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(), 220)
        r = c.command(proxy_v1("192.0.2.10", 40000).decode().rstrip("\r\n"))
        self.assertNotEqual(r.code // 100, 2, r)
        self.quit(c)
        self.assertTrue(self.single_capture(mailtap).header["client"].startswith("127.0.0.1:"))


class PostfixUpstreamIdentityTest(IntegrationTest):
    """--upstream-identity against a real Postfix: its Received header names the client."""

    def start_receiver(self, main_cf):
        b = ReceivingPostfix(main_cf=main_cf)
        self.addCleanup(b.cleanup)
        return b.start()

    def deliver(self, mailtap, header, number):
        """One message through mailtap, after `header` (b"" for none)."""
        c = self.connect(mailtap.port, timeout=60)
        if header:
            c.send(header)
        self.assertReply(c.reply(60), 220)
        self.assertReply(c.command("EHLO client.example", 60), 250)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM, 60), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO, 60), 250)
        self.assertReply(c.command("DATA", 60), 354)
        c.send("From: <%s>\r\nTo: <%s>\r\nMessage-ID: <identity-%d@a.mail.test>\r\nSubject: identity\r\n\r\n"
               "hello\r\n.\r\n" % (FROM, TO, number))
        self.assertReply(c.reply(60), 250)
        self.quit(c)

    def delivered_received_header(self, b, number):
        """The Received header B wrote into message `number`, unfolded."""
        b.wait_for_log(r"status=sent \(delivered to maildir\)", number)
        wanted = b"<identity-%d@a.mail.test>" % number
        found = [m for m in b.maildir_messages() if wanted in m]
        self.assertEqual(len(found), 1, b.maillog()[-3000:])
        received = re.search(rb"^Received: (.*?)\n(?!\s)", found[0], re.M | re.S)
        self.assertIsNotNone(received, found[0][:1000])
        return re.sub(rb"\s+", b" ", received.group(1))

    def upstream_preamble(self, mailtap, length):
        caps = mailtap.wait_captures(1, 60)
        self.assertEqual(len(caps), 1)
        self.assertCaptureComplete(caps[0])
        return caps[0].bytes_of("upstream", "out")[:length]

    def check_proxy_mode(self, mode, incoming, expected_header, claimed):
        b = self.start_receiver({"smtpd_upstream_proxy_protocol": "haproxy"})
        args = ["--upstream-identity", mode] + (["--listen-proxy-protocol"] if incoming else [])
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, b.port), args=args)
        self.deliver(mailtap, incoming, 1)
        received = self.delivered_received_header(b, 1)
        self.assertRegex(received, rb"^from client\.example \(unknown \[" + re.escape(claimed.encode()) + rb"\]\)")
        self.assertEqual(self.upstream_preamble(mailtap, len(expected_header)), expected_header)

    def test_proxy_v1_names_the_balancers_client(self):
        self.check_proxy_mode("proxy_v1", proxy_v1("192.0.2.10", 40000), proxy_v1("192.0.2.10", 40000), "192.0.2.10")

    def test_proxy_v2_names_the_balancers_client(self):
        self.check_proxy_mode("proxy_v2", proxy_v2("192.0.2.20", 40001), proxy_v2("192.0.2.20", 40001), "192.0.2.20")

    def test_proxy_v2_names_a_direct_client(self):
        """No balancer: the header names the connection's own client and mailtap's listener."""
        b = self.start_receiver({"smtpd_upstream_proxy_protocol": "haproxy"})
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, b.port), args=["--upstream-identity", "proxy_v2"])
        self.deliver(mailtap, b"", 1)
        received = self.delivered_received_header(b, 1)
        self.assertRegex(received, rb"^from client\.example \(unknown \[127\.0\.0\.1\]\)")
        preamble = self.upstream_preamble(mailtap, 28)
        self.assertEqual(preamble[:16], V2_SIGNATURE + b"\x21\x11\x00\x0c")
        self.assertEqual(socket.inet_ntoa(preamble[16:20]), "127.0.0.1")
        self.assertEqual(struct.unpack("!H", preamble[26:28])[0], mailtap.port)

    def test_proxy_identity_needs_a_real_upstream(self):
        from harness import run_mailtap
        r = run_mailtap(["run", "--listen", "127.0.0.1:0", "--upstream-identity", "proxy_v1"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"upstream_identity = proxy_v1 needs an upstream", r.stderr)
        r = run_mailtap(["run", "--listen", "127.0.0.1:0", "--upstream-identity", "proxy_v3"])
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--upstream-identity 'proxy_v3': expected none, proxy_v1, proxy_v2 or xclient", r.stderr)

    def test_xclient_names_the_balancers_client(self):
        """B offers XCLIENT to mailtap (smtpd_authorized_xclient_hosts): mailtap sends it, B starts
        over as the client it names, and the client never sees any of it."""
        b = self.start_receiver({"smtpd_authorized_xclient_hosts": "127.0.0.1"})
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, b.port),
                                     args=["--upstream-identity", "xclient", "--listen-proxy-protocol"])
        c = self.connect(mailtap.port, timeout=60)
        c.send(proxy_v1("192.0.2.30", 40002))
        self.assertReply(c.reply(60), 220)
        ehlo = c.command("EHLO client.example", 60)
        self.assertReply(ehlo, 250)
        self.assertNotIn("XCLIENT", ehlo.text)
        self.quit(c)
        self.deliver(mailtap, proxy_v1("192.0.2.30", 40003), 1)
        received = self.delivered_received_header(b, 1)
        self.assertRegex(received, rb"^from client\.example \(unknown \[192\.0\.2\.30\]\)")
        caps = mailtap.wait_captures(2, 60)
        for cap in caps:
            self.assertCaptureComplete(cap)
            relay_commands = [r["text"] for r in cap.of_type("command") if r["leg"] == "upstream"]
            self.assertRegex(relay_commands[0], r"^XCLIENT ADDR=192\.0\.2\.30 PORT=4000[23] NAME=\[UNAVAILABLE\] "
                                                r"HELO=client\.example$")
            self.assertEqual(relay_commands[1], "EHLO client.example")
            self.assertEqual(cap.client_replies()[0].code, 220)
            self.assertNotIn(b"XCLIENT", cap.bytes_of("client", "out"))

    def test_xclient_not_offered_sends_nothing(self):
        """B does not authorize mailtap: no XCLIENT, delivery goes on from mailtap's address."""
        b = self.start_receiver({})
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, b.port),
                                     args=["--upstream-identity", "xclient", "--listen-proxy-protocol"])
        self.deliver(mailtap, proxy_v1("192.0.2.30", 40002), 1)
        received = self.delivered_received_header(b, 1)
        self.assertRegex(received, rb"^from client\.example \(unknown \[127\.0\.0\.1\]\)")
        cap = mailtap.wait_captures(1, 60)[0]
        self.assertEqual([r for r in cap.of_type("command") if r["leg"] == "upstream"], [])
        self.assertNotIn(b"XCLIENT", cap.bytes_of("upstream", "out"))
