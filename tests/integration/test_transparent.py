"""Transparent interception (`--transparent`): each connection's upstream is its original
destination, read with SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST after an nftables REDIRECT.

The test builds its own network: two namespaces joined by a veth pair, a client namespace
and a relay namespace. In the relay namespace smtp-sink listens on the destination address
(port 2525) and mailtap on port 10025; an nftables rule there redirects the client's
connections to port 2525 to mailtap. The client sends to the destination as if mailtap were
not there. Needs root (CAP_NET_ADMIN), iproute2 and nftables, as scripts/test installs them.
Fixed port numbers are safe here: the namespaces are new and private to the test."""

import os
import subprocess
import time
import unittest

from harness import (SMTP_SINK, SWAKS, Capture, Mailtap, IntegrationTest, Process, mailtap_bin, wait_for_captures,
                     wait_until)

DEST_PORT = 2525
RELAY_PORT = 10025
V4_CLIENT, V4_DEST = "10.231.0.1", "10.231.0.2"
V6_CLIENT, V6_DEST = "fd31::1", "fd31::2"


def ip(*args):
    subprocess.run(["ip", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)


def in_ns(ns, *argv):
    return ["ip", "netns", "exec", ns, *argv]


def ns_listening(ns, port):
    out = subprocess.run(in_ns(ns, "ss", "-Hltn", "sport = :%d" % port), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, timeout=10).stdout
    return bool(out.strip())


class TransparentInterception(IntegrationTest):
    def setUp(self):
        super().setUp()
        tag = "%d%d" % (os.getpid() % 100000, int(time.monotonic() * 1000) % 1000)
        self.ns_client, self.ns_relay = "mtc" + tag, "mtr" + tag
        veth_c, veth_r = "vc" + tag, "vr" + tag
        ip("netns", "add", self.ns_client)
        self.addCleanup(ip, "netns", "del", self.ns_client)
        ip("netns", "add", self.ns_relay)
        self.addCleanup(ip, "netns", "del", self.ns_relay)
        ip("link", "add", veth_c, "netns", self.ns_client, "type", "veth", "peer", "name", veth_r, "netns", self.ns_relay)
        for ns, dev, v4, v6 in ((self.ns_client, veth_c, V4_CLIENT, V6_CLIENT), (self.ns_relay, veth_r, V4_DEST, V6_DEST)):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", v4 + "/24", "dev", dev)
            ip("-n", ns, "addr", "add", v6 + "/64", "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
        # The interception: connections arriving from the client for port 2525 go to mailtap.
        rules = ("table inet mailtap_test {\n"
                 "  chain prerouting {\n"
                 "    type nat hook prerouting priority dstnat; policy accept;\n"
                 "    iifname \"%s\" tcp dport %d redirect to :%d\n"
                 "  }\n"
                 "}\n" % (veth_r, DEST_PORT, RELAY_PORT))
        subprocess.run(in_ns(self.ns_relay, "nft", "-f", "-"), input=rules.encode(), check=True, timeout=30)
        self.sink_v4 = self.start_sink(V4_DEST, "sink-v4")
        self.sink_v6 = self.start_sink("[%s]" % V6_DEST, "sink-v6")
        self.captures = os.path.join(self.workdir, "captures")
        self.relay = self.start_relay()

    def start_relay(self, *extra):
        argv = in_ns(self.ns_relay, mailtap_bin(), "run", "--listen", "[::]:%d" % RELAY_PORT, "--transparent",
                     "--captures", self.captures, "--seed", "1", *extra)
        relay = Process(argv, self.workdir, "mailtap", stdout=subprocess.PIPE)
        self.addCleanup(relay.stop)
        line = Mailtap._ready_line(relay, 20.0)
        self.assertIn("listening", line)
        return relay

    def start_sink(self, host, name):
        dumps = os.path.join(self.workdir, name + "-dumps")
        os.makedirs(dumps)
        os.chmod(self.workdir, 0o755)
        os.chmod(dumps, 0o777)
        argv = in_ns(self.ns_relay, SMTP_SINK, "-u", "nobody", "-c", "-d", dumps + "/%H%M%S.",
                     "%s:%d" % (host, DEST_PORT), "64")
        sink = Process(argv, self.workdir, name)
        self.addCleanup(sink.stop)
        wait_until(lambda: ns_listening(self.ns_relay, DEST_PORT) or not sink.alive(), 10, name + " listening")
        self.assertTrue(sink.alive(), sink.stderr_text())
        sink.dump_dir = dumps
        return sink

    def send_from_client(self, server, message_id):
        argv = in_ns(self.ns_client, SWAKS, "--server", server, "--helo", "client.test", "--timeout", "30",
                     "--from", "alice@example.org", "--to", "bob@example.net",
                     "--header", "Message-ID: <%s>" % message_id, "--body", "intercepted\n")
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    def dumps_of(self, sink):
        return [os.path.join(sink.dump_dir, n) for n in sorted(os.listdir(sink.dump_dir))]

    def only_capture(self):
        caps = wait_for_captures(self.captures, 1, 30)
        self.assertEqual(len(caps), 1, [c.path for c in caps])
        return caps[0]

    def test_ipv4_connection_goes_to_its_original_destination(self):
        code, out = self.send_from_client("%s:%d" % (V4_DEST, DEST_PORT), "v4@intercepted")
        self.assertEqual(code, 0, out)
        cap = self.only_capture()
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["upstream"], "%s:%d" % (V4_DEST, DEST_PORT))
        # An IPv4 client of the dual-stack listener is named by its IPv4 address.
        self.assertEqual(cap.header["client"].rsplit(":", 1)[0], V4_CLIENT)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        wait_until(lambda: len(self.dumps_of(self.sink_v4)) == 1, 10, "the message at the IPv4 destination")
        with open(self.dumps_of(self.sink_v4)[0], "rb") as f:
            self.assertIn(b"Message-ID: <v4@intercepted>", f.read())
        self.assertEqual(self.dumps_of(self.sink_v6), [])

    def test_ipv6_connection_goes_to_its_original_destination(self):
        code, out = self.send_from_client("[%s]:%d" % (V6_DEST, DEST_PORT), "v6@intercepted")
        self.assertEqual(code, 0, out)
        cap = self.only_capture()
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.header["upstream"], "[%s]:%d" % (V6_DEST, DEST_PORT))
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        wait_until(lambda: len(self.dumps_of(self.sink_v6)) == 1, 10, "the message at the IPv6 destination")
        with open(self.dumps_of(self.sink_v6)[0], "rb") as f:
            self.assertIn(b"Message-ID: <v6@intercepted>", f.read())
        self.assertEqual(self.dumps_of(self.sink_v4), [])

    def test_a_connection_addressed_to_mailtap_itself_goes_to_the_configured_upstream(self):
        # Not redirected: its original destination is mailtap's own address, which must never
        # be dialled (a loop); the configured upstream (here the built-in sink) takes it.
        code, out = self.send_from_client("%s:%d" % (V4_DEST, RELAY_PORT), "direct@mailtap")
        self.assertEqual(code, 0, out)
        cap = self.only_capture()
        self.assertEqual(cap.header["upstream"], "builtin")
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        self.assertEqual(self.dumps_of(self.sink_v4), [])

    def test_a_redirect_that_catches_mailtaps_own_connections_is_a_loop_refused_at_once(self):
        # The README's output-chain rule without `meta skuid != mailtap`: mailtap's own
        # connection to the destination is redirected back to it. The listener knows it as
        # mailtap's own upstream connection and answers it 421 4.4.6, which the first session
        # relays to the client: one session, one capture, no message, where the loop used to
        # open sessions until max_sessions (each a capture) before a 421 4.3.2 unwound it.
        rules = ("table inet mailtap_loop {\n"
                 "  chain output {\n"
                 "    type nat hook output priority -100; policy accept;\n"
                 "    tcp dport %d redirect to :%d\n"
                 "  }\n"
                 "}\n" % (DEST_PORT, RELAY_PORT))
        subprocess.run(in_ns(self.ns_relay, "nft", "-f", "-"), input=rules.encode(), check=True, timeout=30)
        code, out = self.send_from_client("%s:%d" % (V4_DEST, DEST_PORT), "loop@intercepted")
        self.assertNotEqual(code, 0, out)
        self.assertIn("421 4.4.6", out)
        time.sleep(1.0)   # a loop, were there one, would go on opening sessions meanwhile
        self.relay.stop()
        caps = wait_for_captures(self.captures, 1, 30)
        self.assertEqual(len(caps), 1, [c.path for c in caps])
        cap = caps[0]
        self.assertEqual(cap.header["upstream"], "%s:%d" % (V4_DEST, DEST_PORT))
        banner = [r for r in cap.of_type("reply") if r["leg"] == "upstream"][0]
        self.assertEqual((banner["code"], banner["enhanced"]), (421, "4.4.6"), banner)
        self.assertEqual(cap.transactions, [])
        self.assertEqual(self.dumps_of(self.sink_v4), [])

    def test_a_proxy_header_upstream_names_the_original_destination(self):
        # With upstream_identity = proxy_v1 the destination learns where the client connected:
        # the address it dialled before the redirect, not mailtap's own listener.
        self.relay.stop()
        self.sink_v4.stop()
        heard = os.path.join(self.workdir, "proxy-line")
        listener = ("import socket,sys\n"
                    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)\n"
                    "c,_=s.accept(); c.settimeout(30); data=b''\n"
                    "while b'\\r\\n' not in data:\n"
                    "    chunk=c.recv(256)\n"
                    "    if not chunk: break\n"
                    "    data+=chunk\n"
                    "open(sys.argv[3],'wb').write(data.split(b'\\r\\n')[0])\n"
                    "c.sendall(b'554 5.7.1 seen\\r\\n'); c.close()\n")
        upstream = Process(in_ns(self.ns_relay, "/usr/bin/python3", "-c", listener, V4_DEST, str(DEST_PORT), heard),
                           self.workdir, "proxy-listener")
        self.addCleanup(upstream.stop)
        wait_until(lambda: ns_listening(self.ns_relay, DEST_PORT) or not upstream.alive(), 10, "proxy listener")
        self.relay = self.start_relay("--upstream-identity", "proxy_v1", "--upstream", "%s:%d" % (V4_DEST, DEST_PORT))
        self.send_from_client("%s:%d" % (V4_DEST, DEST_PORT), "proxied@intercepted")
        wait_until(lambda: os.path.exists(heard), 30, "the PROXY line at the destination")
        with open(heard, "rb") as f:
            fields = f.read().split(b" ")
        self.assertEqual(fields[:4], [b"PROXY", b"TCP4", V4_CLIENT.encode(), V4_DEST.encode()], fields)
        self.assertEqual(fields[5], str(DEST_PORT).encode(), fields)


if __name__ == "__main__":
    unittest.main()
