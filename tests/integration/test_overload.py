"""Overload (issue 11 item 6; SECURITY.md, "Threats and the tests that cover them").

10,000 connections opened at once against max_sessions, and 100,000 recipients in one
transaction. The relay refuses what is over its limits with the documented reply, keeps
serving what is within them, never stops accepting, and its memory stays bounded (VmHWM,
its resident peak, against its resident size before).

Covered elsewhere, not repeated here: 1,000,000 pipelined NOOPs without a reply read
(test_limits_and_smuggling.PipeliningFlood), the 1001st recipient
(test_limits_and_smuggling.CommandLimits.test_1001_recipients).
"""

import errno
import resource
import selectors
import socket
import threading
import time
import unittest

from harness import IntegrationTest, LOOPBACK, make_message, memory_bound_kib, open_paths, parse_replies, wait_until


def raise_nofile(wanted):
    """Raises this process's RLIMIT_NOFILE (and so that of the relays it starts) to `wanted`,
    the hard limit too when allowed (root); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class ConnectionStorm(IntegrationTest):

    CONNECTIONS = 10_000
    MAX_SESSIONS = 100
    STORM_S = 60.0              # every connection has its first reply by then
    GROWTH_KIB = 64 * 1024      # 100 sessions and the refusals in flight

    def setUp(self):
        super().setUp()
        limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, limits)
        got = raise_nofile(self.CONNECTIONS * 2 + 1000)
        if got < self.CONNECTIONS + 1000:
            self.fail("RLIMIT_NOFILE is %d; this test needs %d descriptors (run as root, as CI does)"
                      % (got, self.CONNECTIONS + 1000))

    def storm(self, port):
        """Opens CONNECTIONS connections at once (non-blocking) and reads each one's first
        reply line. Returns ({socket: first line}, [sockets the relay closed after it])."""
        sel = selectors.DefaultSelector()
        first, closed, socks = {}, set(), []
        self.addCleanup(lambda: [s.close() for s in socks])
        self.addCleanup(sel.close)
        for _ in range(self.CONNECTIONS):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex((LOOPBACK, port))
            self.assertIn(err, (0, errno.EINPROGRESS), errno.errorcode.get(err))
            socks.append(s)
            sel.register(s, selectors.EVENT_READ, bytearray())
        deadline = time.monotonic() + self.STORM_S
        open_count = len(socks)
        while open_count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s, buf = key.fileobj, key.data
                try:
                    chunk = s.recv(4096)
                except (ConnectionResetError, BlockingIOError):
                    chunk = b""
                buf += chunk
                if s not in first and b"\r\n" in buf:
                    first[s] = bytes(buf.split(b"\r\n", 1)[0])
                    if first[s].startswith(b"220"):   # admitted: stays open, nothing more to read
                        sel.unregister(s)
                        open_count -= 1
                        continue
                if not chunk:
                    closed.add(s)
                    sel.unregister(s)
                    open_count -= 1
        return first, closed, socks

    def test_10000_connections_at_once(self):
        # Protection: relay/server.cpp admits at most max_sessions and answers the rest
        # 421 4.3.2 at once, closing them, while relay/accept_loop.cpp goes on accepting.
        # Without the limit every connection becomes a session (an upstream connection and a
        # capture file each); without prompt refusals the storm's connections wait forever.
        mailtap = self.start_mailtap(args=["--max-sessions", str(self.MAX_SESSIONS)])
        before = mailtap.rss_kib()
        started = time.monotonic()
        first, closed, socks = self.storm(mailtap.port)
        took = time.monotonic() - started
        self.assertTrue(mailtap.alive(), mailtap.stderr_text()[-2000:])
        self.assertEqual(len(first), self.CONNECTIONS,
                         "%d of %d connections had no reply after %.0f s"
                         % (self.CONNECTIONS - len(first), self.CONNECTIONS, took))
        admitted = [s for s, line in first.items() if line.startswith(b"220")]
        refused = [s for s, line in first.items() if line.startswith(b"421 4.3.2")]
        self.assertEqual(len(admitted), self.MAX_SESSIONS)
        self.assertEqual(len(refused), self.CONNECTIONS - self.MAX_SESSIONS,
                         sorted({line[:30] for line in first.values()}))
        self.assertEqual(set(refused), closed, "a refused connection was left open")
        grown = mailtap.hwm_kib() - before
        self.assertLess(grown, memory_bound_kib(self.GROWTH_KIB),
                        "mailtap grew by %d KiB for %d connections" % (grown, self.CONNECTIONS))
        # The admitted sessions work, and once they leave their slots are free again.
        probe = admitted[0]
        probe.setblocking(True)
        probe.settimeout(20)
        probe.sendall(b"EHLO storm.test\r\nQUIT\r\n")
        got = b""
        while b"221" not in got:
            chunk = probe.recv(4096)
            self.assertTrue(chunk, got)
            got += chunk
        self.assertEqual([r.code for r in parse_replies(got)], [250, 221])
        for s in socks:
            s.close()
        socks.clear()

        def served():
            try:
                c = self.connect(mailtap.port, timeout=5)
                return c.reply().code == 220
            except (OSError, AssertionError):
                return False
        wait_until(served, 20, "a new session to be admitted after the storm")
        counters = mailtap.stop_with_counters()
        self.assertEqual(counters["refused_max_sessions"], self.CONNECTIONS - self.MAX_SESSIONS, counters)


class RecipientFlood(IntegrationTest):

    RECIPIENTS = 100_000
    CAP = 1000                      # protocol/limits.hpp recipients_cap
    RECORDED = 2000                 # protocol/limits.hpp recipients_recorded_cap
    # A flood of commands is mostly capture records: the writer's queue may hold up to 32 MiB
    # (captures/writer.cpp queued_bytes_cap) before the session stops reading; ~24 MiB measured.
    GROWTH_KIB = 48 * 1024

    def test_100000_recipients(self):
        # Protection: recipients_cap (protocol/limits.hpp): past 1000 recipients each RCPT gets
        # 452 4.5.3 and is not forwarded; recipients_recorded_cap bounds what the capture
        # keeps. The first 1000 stay in the transaction, which still delivers.
        up = self.start_scripted()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<flood@example.test>"), 250)
        before = mailtap.rss_kib()
        rcpts = [b"RCPT TO:<r%06d@example.test>\r\n" % i for i in range(self.RECIPIENTS)]
        sender_error = []

        def send():
            try:
                for i in range(0, len(rcpts), 1000):       # pipelined, 1000 a write
                    c.sock.sendall(b"".join(rcpts[i:i + 1000]))
            except OSError as e:
                sender_error.append(e)

        t = threading.Thread(target=send, daemon=True)
        t.start()
        codes = [r.code for r in c.replies(self.RECIPIENTS, timeout=120)]
        t.join(10)
        self.assertEqual(sender_error, [])
        self.assertEqual(codes[:self.CAP], [250] * self.CAP)
        self.assertEqual(set(codes[self.CAP:]), {452})
        self.assertReply(c.command("DATA"), 354)
        message = make_message("<rcpt-flood@example.test>")
        c.send(message + b".\r\n")
        self.assertReply(c.reply(), 250)
        grown = mailtap.hwm_kib() - before
        self.quit(c)
        conn = up.wait_for_connections(1)[0]
        wait_until(conn.closed.is_set, 20, "the upstream connection to close")
        forwarded = [cmd for cmd in conn.commands if cmd.startswith(b"RCPT TO:")]
        self.assertEqual(forwarded, [r.rstrip(b"\r\n") for r in rcpts[:self.CAP]])
        self.assertEqual(conn.messages, [message])
        cap = self.single_capture(mailtap, timeout=60)
        self.assertCaptureComplete(cap)
        [t] = cap.transactions
        self.assertEqual(t["outcome"], "delivered")
        self.assertEqual(t["rcpt_to"][:self.CAP], ["r%06d@example.test" % i for i in range(self.CAP)])
        self.assertEqual(len(t["rcpt_to"]), self.RECORDED)
        self.assertEqual(t["rcpt_codes"], [250] * self.CAP + [452] * (self.RECORDED - self.CAP))
        self.assertLess(grown, memory_bound_kib(self.GROWTH_KIB),
                        "mailtap grew by %d KiB for %d recipients" % (grown, self.RECIPIENTS))


class IdleSessionsUnderADescriptorLimit(IntegrationTest):
    """Idle sessions under a low descriptor limit (the bench's W6, README "Performance"):
    while more captures are open than an eighth of RLIMIT_NOFILE, an idle session's capture
    gives its descriptor back until its next write (captures/writer.hpp, park_idle_above), so
    that such a session holds two descriptors, its legs, and a relay holds half as many again.
    Under 400 descriptors a relay holding three per session cannot hold 150 (the previous
    binary refused the 129th with 421 4.4.1 "Too many open files")."""

    LIMIT = 400
    SESSIONS = 150

    def test_idle_sessions_hold_two_descriptors_and_their_captures_go_on(self):
        sink = self.start_smtp_sink(dump=False)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.LIMIT, hard))   # the relay's, inherited
        try:
            mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        before = len(open_paths(mailtap.pid))
        clients = []
        for i in range(self.SESSIONS):
            clients.append(self.greeted_client(mailtap.port, ehlo="idle%d.test" % i))
            if i % 20 == 19:
                time.sleep(0.1)   # a few writer ticks: idle captures give their descriptors back
        wait_until(lambda: len(open_paths(mailtap.pid)) - before <= 2 * self.SESSIONS + 10, 10,
                   "idle sessions to hold two descriptors each")
        # Each session goes on: its capture opens again and records the rest.
        for i, c in enumerate(clients):
            self.assertReply(c.command("MAIL FROM:<s%d@example.test>" % i), 250)
            self.quit(c)
        caps = mailtap.wait_captures(self.SESSIONS, timeout=60)
        self.assertEqual(len(caps), self.SESSIONS)
        for cap in caps:
            self.assertCaptureComplete(cap)
        commands = sorted(r["text"] for cap in caps for r in cap.records
                          if r.get("type") == "command" and r["text"].startswith("MAIL FROM:"))
        self.assertEqual(commands, sorted("MAIL FROM:<s%d@example.test>" % i for i in range(self.SESSIONS)))


if __name__ == "__main__":
    unittest.main()
