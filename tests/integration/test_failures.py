"""Outcome semantics when a leg fails (README, "Outcomes").

- upstream refuses the connection      -> 421 4.4.1 at greeting, end reason upstream_unreachable
- upstream dies in DATA                -> client may finish its data, then 451 4.4.2; the
                                          upstream never received CRLF.CRLF
- upstream dies after the dot, silent  -> 451, transaction outcome "unknown" (duplicate risk)
- client dies in DATA                  -> upstream closed without the dot: nothing delivered,
                                          transaction outcome "aborted"
"""

import os
import random
import shutil
import socket
import subprocess
import threading
import time
import unittest

from harness import (IntegrationTest, LOOPBACK, Capture, ScriptedAnswers, capture_paths, closed_port,
                     make_message, mailtap_bin, show_json, wait_until)


class LateToAccept(ScriptedAnswers):
    """An upstream whose accept queue stays full until `open()`: a dial's SYN is dropped and
    sent again by the kernel a second later, so the relay waits for its handshake as it would
    across a network, not on loopback where connect(2) has finished it already."""

    def __init__(self):
        self.opened = threading.Event()
        super().__init__()
        self.listener.listen(0)   # one connection fills the queue
        self.filler = socket.create_connection((LOOPBACK, self.port), timeout=5)

    def open(self):
        self.opened.set()

    def _accept_loop(self):
        while not self.opened.wait(0.1):
            if self.stopping.is_set():
                return
        super()._accept_loop()

    def stop(self):
        self.opened.set()
        self.filler.close()
        super().stop()


def can_give_a_relay_its_own_hosts_file():
    """Root, and a mount namespace to bind a hosts file in (the dial test of a name with two
    addresses needs one, the lookup tests a resolv.conf and a nameserver on port 53; CI runs
    the suite as root)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return r.returncode == 0


class SilentNameserver:
    """A UDP socket on port 53 of a loopback address that takes every query and answers none,
    as a nameserver behind a dropping firewall does: glibc waits resolv.conf's timeout for each
    try. (Were nothing bound there, the kernel's port-unreachable would fail the lookup at once.)"""

    def __init__(self):
        # A loopback address of its own (127.53.x.y): port 53 is free there, whatever else on
        # the machine (another test run) holds it elsewhere.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(50):
            self.address = "127.53.%d.%d" % (random.randint(0, 255), random.randint(1, 254))
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no free port 53 on 127.53.0.0/16")
        self.queries = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._take, daemon=True)
        self.thread.start()

    def _take(self):
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except OSError:
                continue

    def stop(self):
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


class OutcomeSemantics(IntegrationTest):

    def open_transaction(self, port):
        c = self.greeted_client(port)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        return c

    def test_upstream_refuses_connection(self):
        port = closed_port()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, port))
        c = self.connect(mailtap.port)
        r = c.reply()
        self.assertReply(r, 421, "4.4.1")
        self.assertTrue(c.closed_by_peer(10), "mailtap kept the client connection open")
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "upstream_unreachable")
        self.assertEqual(cap.transactions, [])
        # The client heard exactly what the capture says the relay sent.
        self.assertEqual([x.code for x in cap.client_replies()], [421])

    def test_an_upstream_slow_to_complete_the_handshake_is_relayed_once_it_does(self):
        # The relay waits for the dial (relay/session.cpp connect_first), then registers the
        # socket again for input only (forget_write_interest): the conversation must go on.
        up = LateToAccept()
        self.addCleanup(up.stop)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        started = time.monotonic()
        c = self.connect(mailtap.port)
        time.sleep(0.2)   # the relay dials, and its SYN is dropped
        up.open()
        self.assertReply(c.reply(), 220)
        self.assertGreater(time.monotonic() - started, 0.9)   # the kernel sent the SYN again a second later
        self.assertReply(c.command("EHLO client.test"), 250)
        self.assertReply(c.command("MAIL FROM:<sender@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<rcpt@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(make_message("<late-accept@example.test>", b"body\r\n") + b".\r\n")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.command("QUIT"), 221)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual([t["outcome"] for t in cap.transactions], ["delivered"])
        relayed = [conn for conn in up.all_connections() if conn.messages]
        self.assertEqual(len(relayed), 1)
        self.assertIn(b"late-accept@example.test", relayed[0].messages[0])

    def test_a_drain_during_the_dial_is_no_upstream_failure(self):
        # A hostile trial: SIGTERM while sessions dialled logged "upstream connect to ...:
        # Operation canceled" and counted each as an unreachable upstream.
        up = LateToAccept()   # never opened: the dial waits
        self.addCleanup(up.stop)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.connect(mailtap.port)
        time.sleep(0.3)   # the relay dials, and its SYN is dropped
        counters = mailtap.stop_with_counters()
        self.assertReply(c.reply(), 421, "4.3.2")
        self.assertEqual(counters.get("upstream_unreachable", 0), 0, counters)
        cap = self.single_capture(mailtap)
        self.assertEqual(cap.end["reason"], "drain")

    @unittest.skipUnless(can_give_a_relay_its_own_hosts_file(), "needs root and unshare -m")
    def test_a_name_whose_first_address_drops_the_dial_is_relayed_to_the_next(self):
        # A hostile trial: "multi" named ::1, whose accept queue was full (the SYN dropped), then
        # 127.0.0.1 with an MTA; the first address took the whole upstream_connect and the second
        # was never tried. Each address but the last now gets its share of it (RFC 5321 5.1).
        up = ScriptedAnswers()
        self.addCleanup(up.stop)
        silent = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.addCleanup(silent.close)
        silent.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        silent.bind(("::1", up.port))
        silent.listen(0)
        filler = socket.create_connection(("::1", up.port), timeout=5)   # fills its queue
        self.addCleanup(filler.close)
        hosts = self.write_file("hosts", b"::1 multi.test\n127.0.0.1 multi.test\n127.0.0.1 localhost\n")
        config = self.write_file("multi.toml", b"[timeouts]\nupstream_connect = 4\n")
        mailtap = self.start_mailtap_seeing({"/etc/hosts": hosts}, upstream="multi.test:%d" % up.port,
                                            args=["--config", config])
        started = time.monotonic()
        c = self.connect(mailtap.port)
        self.assertReply(c.reply(10), 220)   # from the MTA on 127.0.0.1
        elapsed = time.monotonic() - started
        self.assertGreater(elapsed, 1.5)   # ::1 was tried first, for its half of the 4 s
        self.assertLess(elapsed, 3.5)
        self.assertReply(c.command("QUIT"), 221)
        self.assertEqual(len(up.wait_for_connections(1)), 1)

    def start_mailtap_seeing(self, files, **kwargs):
        """A relay that sees each of `files` (system path -> the test's file) in place of the
        system's own, through a bind mount in a mount namespace of its own."""
        mounts = " && ".join("mount --bind %s %s" % (mine, path) for path, mine in files.items())
        wrapper = self.write_file("mailtap-seeing", (
            "#!/bin/sh\nexec unshare -m --propagation private sh -c "
            "'%s && exec \"$0\" \"$@\"' %s \"$@\"\n" % (mounts, mailtap_bin())).encode())
        os.chmod(wrapper, 0o755)
        os.environ["MAILTAP_BIN"], real = wrapper, os.environ.get("MAILTAP_BIN")
        try:
            return self.start_mailtap(**kwargs)
        finally:
            if real is None:
                del os.environ["MAILTAP_BIN"]
            else:
                os.environ["MAILTAP_BIN"] = real

    def start_mailtap_behind_a_silent_nameserver(self, upstream_connect):
        dns = SilentNameserver()
        self.addCleanup(dns.stop)
        resolv = self.write_file("resolv.conf", ("nameserver %s\noptions timeout:5 attempts:2\n" % dns.address).encode())
        hosts = self.write_file("hosts", b"127.0.0.1 localhost\n")
        config = self.write_file("slow.toml", ("[timeouts]\nupstream_connect = %d\n" % upstream_connect).encode())
        mailtap = self.start_mailtap_seeing({"/etc/resolv.conf": resolv, "/etc/hosts": hosts},
                                            upstream="mx.slow-dns.test:25", args=["--config", config])
        return mailtap, dns

    @unittest.skipUnless(can_give_a_relay_its_own_hosts_file(), "needs root and unshare -m")
    def test_a_name_whose_nameserver_does_not_answer_fails_each_session_within_upstream_connect(self):
        # A hostile trial: six clients behind a nameserver that answered nothing got their 421 at
        # 5, 5, 10, 10, 15 and 15 s: the lookup ignored upstream_connect, and Asio's resolver
        # thread ran one lookup at a time. Each session now stops waiting at its deadline.
        mailtap, dns = self.start_mailtap_behind_a_silent_nameserver(upstream_connect=2)
        clients = [self.connect(mailtap.port) for _ in range(6)]
        started = time.monotonic()
        heard = [None] * len(clients)

        def listen(i):
            heard[i] = (clients[i].reply(20), time.monotonic() - started)

        threads = [threading.Thread(target=listen, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for reply, after in heard:
            self.assertReply(reply, 421, "4.4.1")
            self.assertIn("cannot resolve mx.slow-dns.test", reply.text)
            self.assertGreater(after, 1.5)
            self.assertLess(after, 4.0)   # glibc alone would take 10 s (timeout 5 s, 2 attempts)
        self.assertGreater(dns.queries, 0)   # the lookup did ask the silent nameserver
        counters = mailtap.stop_with_counters()
        self.assertEqual(counters.get("upstream_unreachable", 0), 6, counters)
        for cap in mailtap.wait_captures(6):
            self.assertEqual(cap.end["reason"], "upstream_unreachable")
            self.assertIn("no answer within 2 s (timeouts.upstream_connect)", cap.end["detail"])

    @unittest.skipUnless(can_give_a_relay_its_own_hosts_file(), "needs root and unshare -m")
    def test_a_client_that_leaves_during_the_lookup_ends_its_session_at_once(self):
        # A hostile trial: connect-and-close clients (health checks) held their sessions for the
        # whole upstream_connect while the lookup hung, and filled max_sessions: nothing read the
        # client during the dial.
        mailtap, dns = self.start_mailtap_behind_a_silent_nameserver(upstream_connect=30)
        for _ in range(3):
            s = socket.create_connection((LOOPBACK, mailtap.port), timeout=5)
            s.close()
        started = time.monotonic()
        caps = mailtap.wait_captures(3, timeout=10)
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual([c.end["reason"] for c in caps], ["client_closed"] * 3)
        counters = mailtap.stop_with_counters()
        self.assertEqual(counters.get("upstream_unreachable", 0), 0, counters)

    @unittest.skipUnless(can_give_a_relay_its_own_hosts_file(), "needs root and unshare -m")
    def test_a_sigterm_during_a_lookup_stops_the_relay_at_once(self):
        # A hostile trial: SIGTERM waited for glibc to give up on the lookup (up to 30 s), and
        # the capture recorded the 421 at the signal's time, not when the client heard it.
        mailtap, dns = self.start_mailtap_behind_a_silent_nameserver(upstream_connect=30)
        c = self.connect(mailtap.port)
        wait_until(lambda: dns.queries > 0, 10, "the relay to ask the nameserver")
        started = time.monotonic()
        counters = mailtap.stop_with_counters(timeout=20)
        self.assertLess(time.monotonic() - started, 4.0)
        self.assertReply(c.reply(5), 421, "4.3.2")
        self.assertEqual(counters.get("upstream_unreachable", 0), 0, counters)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "drain")

    def test_upstream_dies_mid_data(self):
        up = self.start_scripted("die_mid_data", die_after=8 * 1024)
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.open_transaction(mailtap.port)
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-=\r\n"   # 66 octets
        head = make_message("<dies-mid-data@example.test>", line * 200)               # > 8 KiB
        c.send(head)
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the scripted upstream to hang up mid-DATA")
        # Wait (bounded) until the relay has noticed, so the rest of the data surely arrives
        # after the loss; the capture records the loss as a note.
        # (The recorder creates the file on its next batch: until then there is none to read.)
        wait_until(lambda: any("upstream" in n for path in capture_paths(mailtap.captures)[:1]
                               for n in Capture(path).notes),
                   20, "the relay to record the upstream loss")
        # The client can still send the rest of its message (256 KiB more) ...
        c.send(line * 4000 + b".\r\n")
        # ... and gets a transient failure for it.
        r = c.reply()
        self.assertReply(r, 451, "4.4.2")
        self.assertNotIn(b"\r\n.\r\n", bytes(conn.raw))
        self.assertEqual(conn.messages, [])
        cap = self.single_capture(mailtap)
        t = cap.transactions
        self.assertEqual(len(t), 1, t)
        self.assertEqual(t[0]["outcome"], "tempfailed")
        self.assertEqual(t[0]["final_reply"]["code"], 451)
        self.assertTrue(t[0]["synthesized"])
        self.assertNotIn(b"\r\n.\r\n", cap.bytes_of("upstream", "out"))
        # Regression test (fixed): the capture is not well formed -- a "bytes" record (the client's
        # last DATA bytes) follows the "end" record, so the last line is not the end record and
        # `mailtap show` refuses the file ('"bytes" record after the end record').
        # protocol/relay_fsm.cpp process_client_input(): the loop's end_of_data() -> flush_replies()
        # -> end_session() emits on_end, and only after the loop record_consumed_client_input()
        # emits on_bytes for the input just consumed.
        self.assertCaptureComplete(cap)
        show_json(cap.path)

    def test_upstream_dies_after_dot_without_reply(self):
        up = self.start_scripted("die_after_dot")
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.open_transaction(mailtap.port)
        message = make_message("<dies-after-dot@example.test>", b"maybe delivered\r\n")
        c.send(message + b".\r\n")
        r = c.reply()
        self.assertReply(r, 451)
        self.assertEqual(r.enhanced[:2], "4.")
        conn = up.wait_for_connections(1)[0]
        self.assertEqual(conn.messages, [message])       # the dot did reach the upstream
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        t = cap.transactions
        self.assertEqual(len(t), 1, t)
        self.assertEqual(t[0]["outcome"], "unknown")
        self.assertEqual(t[0]["final_reply"]["code"], 451)
        self.assertTrue(t[0]["synthesized"])
        self.assertEqual(t[0]["message_id"], "<dies-after-dot@example.test>")

    def test_client_dies_mid_data(self):
        up = self.start_scripted()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.open_transaction(mailtap.port)
        # Half a message; the last line even ends with CRLF, so a relay that "finished" the
        # message for the client would only need to add ".\r\n".
        c.send(make_message("<client-dies@example.test>", b"first half of the body\r\n" * 100))
        c.close()
        cap = self.single_capture(mailtap, released=False)
        self.assertCaptureComplete(cap)
        self.assertEqual(cap.end["reason"], "client_closed")
        t = cap.transactions
        self.assertEqual(len(t), 1, t)
        self.assertEqual(t[0]["outcome"], "aborted")
        self.assertIsNone(t[0]["final_reply"])
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the relay to close the upstream connection")
        self.assertEqual(conn.messages, [], "the upstream received an end of data")
        self.assertIn(b"first half of the body", bytes(conn.raw))   # the data did flow
        self.assertNotIn(b"\r\n.\r\n", bytes(conn.raw))
        self.assertNotIn(b"\r\n.\r\n", cap.bytes_of("upstream", "out"))
        # The session is let go (see test_drain.SessionLimits.test_client_hangup_frees_its_session_slot).
        self.assertSessionReleased(mailtap, cap)

    def test_client_dies_mid_data_recorder_gets_nothing(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        c = self.open_transaction(mailtap.port)
        c.send(make_message("<client-dies-rec@example.test>", b"half\r\n" * 1000))
        c.close()
        cap = self.single_capture(mailtap, released=False)
        self.assertEqual(cap.transactions[0]["outcome"], "aborted")
        self.assertCaptureComplete(cap)
        # A second, complete message through a new session proves the recorder is live and
        # in order: it must be the only message recorded.
        c2 = self.open_transaction(mailtap.port)
        m2 = make_message("<after@example.test>")
        c2.send(m2 + b".\r\n")
        self.assertReply(c2.reply(), 250)
        msgs = rec.wait_for(1)
        self.assertEqual([m["data"] for m in msgs], [m2])


if __name__ == "__main__":
    unittest.main()
