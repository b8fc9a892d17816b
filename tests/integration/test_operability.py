"""Operability (issue 14, item 17): what goes wrong outside the client's control is logged at
warn with the session id, repeats are rate-limited, and the shutdown summary counts them as
errors.

These tests are about the log itself, so they read mailtap's stderr: the warn line naming the
session, how many such lines a repeating failure produces, and the summary's error counts
(the relay has no other place that reports them yet). Everything else is asserted on replies,
captures and exit codes, as in the rest of the suite.
"""

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time
import unittest

from harness import (LOOPBACK, READY_RE, IntegrationTest, Mailtap, Process, closed_port, mailtap_bin,
                     wait_until)
from tls_upstream import ScriptedTlsUpstream

SUMMARY_RE = re.compile(
    r"errors: (?P<total>\d+) \(upstream unreachable (?P<upstream_unreachable>\d+), "
    r"upstream TLS failed (?P<upstream_tls_failed>\d+), refused at max_sessions (?P<refused_max_sessions>\d+), "
    r"accept failed (?P<accept_failed>\d+), session errors (?P<session_errors>\d+), "
    r"capture write failures (?P<capture_write_failures>\d+), upstream failed in session (?P<upstream_failed>\d+); "
    r"(?P<suppressed>\d+) repeated warning")
# relay/session.cpp make_session_id: UTC start, a per-process nonce, the session number.
SESSION_ID = r"\d{8}-\d{6}-[0-9a-f]{8}-\d{6}"
WARN = "[warning]"   # spdlog's level name in its default pattern


class OperabilityTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.state_home = os.path.join(self.workdir, "state")
        os.makedirs(self.state_home)
        self.env = dict(os.environ, XDG_STATE_HOME=self.state_home)

    def relay(self, upstream="builtin", args=(), level="warn", **kw):
        return self.start_mailtap(upstream=upstream, args=["--log-level", level, *args], env=self.env, **kw)

    def stop_and_read(self, m):
        """SIGTERM, exit 0, then mailtap's stderr lines and its summary's error counts."""
        m.signal(signal.SIGTERM)
        self.assertEqual(m.wait(40), 0)
        lines = m.stderr_text().splitlines()
        found = [SUMMARY_RE.search(line) for line in lines]
        summaries = [f for f in found if f]
        self.assertEqual(len(summaries), 1, lines[-20:])
        counts = {k: int(v) for k, v in summaries[0].groupdict().items()}
        return lines, counts

    def warn_lines(self, lines, needle):
        """Warn lines that mention `needle`, the shutdown summary excepted."""
        return [line for line in lines if WARN in line and needle in line and not SUMMARY_RE.search(line)]

    def assertWarnsAboutSession(self, lines, session_id, needle):
        hits = [line for line in self.warn_lines(lines, needle) if "session %s:" % session_id in line]
        self.assertEqual(len(hits), 1, "no warn line for session %s about %r in:\n%s"
                         % (session_id, needle, "\n".join(lines[-30:])))


class WarningsNameTheSession(OperabilityTest):

    def test_refused_upstream_is_a_warning_with_the_session_id_and_an_error(self):
        m = self.relay(upstream="%s:%d" % (LOOPBACK, closed_port()))
        c = self.connect(m.port)
        self.assertReply(c.reply(), 421, "4.4.1")
        session_id = self.single_capture(m).header["session"]
        lines, counts = self.stop_and_read(m)
        self.assertWarnsAboutSession(lines, session_id, "upstream connect to")
        self.assertEqual((counts["total"], counts["upstream_unreachable"]), (1, 1), counts)

    def test_an_upstream_that_hangs_up_in_session_is_a_warning_and_an_error(self):
        """An upstream that closes after the dot without a reply (the message may or may not be
        delivered) is outside the client's control: warned with the session id, counted (a
        seventh trial found no line at all for upstream protocol errors, timeouts, hang-ups)."""
        up = self.start_scripted("die_after_dot")
        m = self.relay(upstream="%s:%d" % (LOOPBACK, up.port))
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<b@example.test>"), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        self.assertReply(c.reply(15), 451, "4.4.2")
        cap = self.single_capture(m)
        self.assertEqual(cap.end["reason"], "upstream_closed")
        lines, counts = self.stop_and_read(m)
        self.assertWarnsAboutSession(lines, cap.header["session"], "upstream_closed")
        self.assertEqual((counts["total"], counts["upstream_failed"]), (1, 1), counts)

    def test_upstream_tls_failure_is_a_warning_with_the_session_id_and_an_error(self):
        up = ScriptedTlsUpstream("garbage")
        self.addCleanup(up.stop)
        m = self.relay(upstream="%s:%d" % (LOOPBACK, up.port), args=["--upstream-tls", "required"])
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.reply(15), 421, "4.7.0")
        session_id = self.single_capture(m).header["session"]
        lines, counts = self.stop_and_read(m)
        self.assertWarnsAboutSession(lines, session_id, "upstream TLS with")
        self.assertEqual((counts["total"], counts["upstream_tls_failed"]), (1, 1), counts)

    def test_connection_refused_at_max_sessions_is_a_warning_with_a_session_id(self):
        m = self.relay(args=["--max-sessions", "1"])
        held = self.greeted_client(m.port)
        refused = self.connect(m.port)
        self.assertReply(refused.reply(), 421, "4.3.2")
        self.quit(held)
        held_id = self.single_capture(m).header["session"]
        lines, counts = self.stop_and_read(m)
        hits = self.warn_lines(lines, "max_sessions (1) reached")
        self.assertEqual(len(hits), 1, lines[-20:])
        refused_id = re.search(r"session (%s):" % SESSION_ID, hits[0])
        self.assertIsNotNone(refused_id, hits[0])
        self.assertNotEqual(refused_id.group(1), held_id)
        self.assertEqual((counts["total"], counts["refused_max_sessions"]), (1, 1), counts)

    def test_capture_write_failure_is_a_warning_with_the_session_id_and_an_error(self):
        m = self.relay()
        # The directory goes away under the running relay: no capture can be created, even as root.
        # (It holds the capture index, index.sqlite3, that the relay opened as it started.)
        shutil.rmtree(m.captures)
        c = self.greeted_client(m.port)
        self.quit(c)
        lines = []
        wait_until(lambda: self.warn_lines(m.stderr_text().splitlines(), "capture write failed"), 20,
                   "the capture write failure warning")
        lines, counts = self.stop_and_read(m)
        hits = self.warn_lines(lines, "capture write failed")
        self.assertEqual(len(hits), 1, lines[-20:])
        self.assertRegex(hits[0], r"session %s: capture write failed" % SESSION_ID)
        self.assertEqual((counts["total"], counts["capture_write_failures"]), (1, 1), counts)

    def test_a_clean_run_counts_no_errors(self):
        m = self.relay(level="info")   # the summary is at info when there is nothing to warn about
        self.quit(self.greeted_client(m.port))
        self.single_capture(m)
        lines, counts = self.stop_and_read(m)
        self.assertEqual(counts["total"], 0, counts)
        self.assertEqual([line for line in lines if WARN in line], [])


class RepeatsAreRateLimited(OperabilityTest):

    # Few enough descriptors that a handful of sessions use them all up (each holds the client
    # socket, the upstream socket, the built-in sink's end of it and its capture file).
    NOFILE = 40

    def start_short_of_descriptors(self):
        argv = [mailtap_bin(), "run", "--listen", "%s:0" % LOOPBACK, "--captures",
                os.path.join(self.workdir, "caps"), "--threads", "1", "--log-level", "warn"]
        limit = self.NOFILE

        def lower_nofile():
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        m = Mailtap.__new__(Mailtap)
        Process.__init__(m, argv, self.workdir, "mailtap", stdout=subprocess.PIPE, env=self.env,
                         preexec_fn=lower_nofile)
        self.addCleanup(m.stop)
        line = m._ready_line(20)
        ready = READY_RE.match(line)
        self.assertIsNotNone(ready, (line, m.stderr_text()))
        m.port = int(ready.group(1))
        return m

    def test_out_of_descriptors_logs_a_few_lines_and_counts_every_failure(self):
        m = self.start_short_of_descriptors()
        socks = []
        self.addCleanup(lambda: [s.close() for s in socks])
        for _ in range(self.NOFILE):
            socks.append(socket.create_connection((LOOPBACK, m.port), timeout=5))
        # The relay backs off 100 ms after each failed accept: ten failures a second.
        time.sleep(3)
        for s in socks:
            s.close()
        socks.clear()
        lines, counts = self.stop_and_read(m)
        warned = self.warn_lines(lines, "accept failed")
        self.assertGreaterEqual(counts["accept_failed"], 15, counts)
        self.assertLessEqual(len(warned), 5, "\n".join(warned))
        self.assertGreaterEqual(len(warned), 1, lines[-20:])
        self.assertGreaterEqual(counts["suppressed"], counts["accept_failed"] - len(warned), counts)
        self.assertGreaterEqual(counts["total"], counts["accept_failed"], counts)


if __name__ == "__main__":
    unittest.main()
