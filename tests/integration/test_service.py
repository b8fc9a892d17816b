"""mailtap as a systemd service (packaging/README.md): the readiness protocol the packaged
unit's Type=notify relies on (sd_notify(3) datagrams to $NOTIFY_SOCKET: READY=1 once the
port listens, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM), and the
SIGHUP reload (relay/reload.hpp): new sessions get the new [[fault]] rules, a session in
flight keeps the rules it started with, a broken file keeps the rules in force, settings
only a restart can change are reported as such.

The test binds the notify socket itself (a Unix datagram socket, as systemd does).
Assertions are on replies, captures and the STATUS= counters mailtap sends -- never on log
text.
"""

import os
import re
import shutil
import signal
import socket
import tempfile
import unittest

from harness import IntegrationTest, LOOPBACK, Capture, fault_summary, port_accepts

FROM = "sender@example.test"
TO = "a@example.com"

QUIET_RULE = b"""# matches only a recipient nobody sends to
[[fault]]
name = "quiet"
type = "reply"
phase = "rcpt"
recipient = "nobody@nowhere.test"
code = 550
"""

ARMED_RULE = b"""# every recipient: 451
[[fault]]
name = "armed"
type = "reply"
phase = "rcpt"
code = 451
enhanced = "4.7.1"
text = "armed by a reload"
"""

BROKEN_RULE = b"""[[fault]]
name = "broken"
type = "no-such-type"
phase = "rcpt"
"""

RELOADS_RE = re.compile(r"reloads: (\d+) ok, (\d+) failed")


class NotifySocket:
    """The service manager's end of sd_notify(3): a bound Unix datagram socket; next()
    returns one message as a dict (KEY=VALUE lines)."""

    def __init__(self):
        # A short directory of its own: a Unix socket path holds at most 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="mtn-")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout=20.0):
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("no sd_notify message in %.0f s" % timeout)
        return dict(line.split("=", 1) for line in data.decode("utf-8", "replace").split("\n") if "=" in line)

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, True)


def reload_counts(message):
    m = RELOADS_RE.search(message.get("STATUS", ""))
    if not m:
        raise AssertionError("no reload counts in STATUS of %r" % message)
    return int(m.group(1)), int(m.group(2))


class ServiceTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.notify = NotifySocket()
        self.addCleanup(self.notify.close)
        state = os.path.join(self.workdir, "state")
        os.makedirs(state)
        self.env = dict(os.environ, XDG_STATE_HOME=state, NOTIFY_SOCKET=self.notify.path)

    def start(self, args):
        m = self.start_mailtap(args=args, env=self.env)
        ready = self.notify.next()
        self.assertEqual(ready.get("READY"), "1", ready)
        return m, ready

    def reload(self, m):
        """SIGHUP; returns the READY=1 message that ends the reload (after RELOADING=1)."""
        m.signal(signal.SIGHUP)
        reloading = self.notify.next()
        self.assertEqual(reloading.get("RELOADING"), "1", reloading)
        self.assertRegex(reloading.get("MONOTONIC_USEC", ""), r"^\d+$", reloading)
        done = self.notify.next()
        self.assertEqual(done.get("READY"), "1", done)
        return done

    def rcpt_reply(self, port, to=TO):
        c = self.greeted_client(port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        r = c.command("RCPT TO:<%s>" % to)
        self.quit(c)
        return r


class Readiness(ServiceTest):

    def test_ready_once_listening_and_stopping_at_sigterm(self):
        m, ready = self.start([])
        # READY=1 names the port, and the port accepts at that moment.
        self.assertIn("listening on %s:%d" % (LOOPBACK, m.port), ready.get("STATUS", ""), ready)
        self.assertTrue(port_accepts(m.port))
        self.assertEqual(reload_counts(ready), (0, 0))
        m.signal(signal.SIGTERM)
        stopping = self.notify.next()
        self.assertEqual(stopping.get("STOPPING"), "1", stopping)
        self.assertEqual(m.wait(20), 0)


class Reload(ServiceTest):

    def test_sighup_arms_new_sessions_keeps_sessions_in_flight_and_survives_a_broken_file(self):
        scenario = self.write_file("scenario.toml", QUIET_RULE)
        m, _ = self.start(["--scenario", scenario])
        self.assertReply(self.rcpt_reply(m.port), 250)

        # A session in flight: its transaction is open when the rules change.
        in_flight = self.greeted_client(m.port)
        self.assertReply(in_flight.command("MAIL FROM:<%s>" % FROM), 250)

        self.write_file("scenario.toml", ARMED_RULE)
        done = self.reload(m)
        self.assertEqual(reload_counts(done), (1, 0))
        self.assertIn("1 fault rule(s) armed", done["STATUS"])

        # New sessions get the new rule...
        self.assertReply(self.rcpt_reply(m.port), 451, "4.7.1")
        # ...the session in flight keeps the rules it started with, and delivers.
        self.assertReply(in_flight.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(in_flight.command("DATA"), 354)
        in_flight.send(b"Subject: in flight\r\n\r\nkept its rules\r\n.\r\n")
        self.assertReply(in_flight.reply(), 250)
        self.quit(in_flight)

        # A broken file: the reload fails, says where, and the armed rule stays.
        self.write_file("scenario.toml", BROKEN_RULE)
        done = self.reload(m)
        self.assertEqual(reload_counts(done), (1, 1))
        self.assertRegex(done["STATUS"], r"last reload failed: .*scenario\.toml:\d+: ")
        self.assertReply(self.rcpt_reply(m.port), 451, "4.7.1")

        # A named pipe in the file's place (a hostile trial): opening it for reading waited for
        # a writer, and every session on the reload's thread froze with it. Now the reload
        # fails at once ("not a regular file") and mail keeps flowing.
        os.remove(scenario)
        os.mkfifo(scenario)
        done = self.reload(m)
        self.assertEqual(reload_counts(done), (1, 2))
        self.assertRegex(done["STATUS"], r"last reload failed: .*scenario\.toml.*not a regular file")
        self.assertReply(self.rcpt_reply(m.port), 451, "4.7.1")
        os.remove(scenario)

        # Fixed again: the failure is gone from the status, the quiet rule is back.
        self.write_file("scenario.toml", QUIET_RULE)
        done = self.reload(m)
        self.assertEqual(reload_counts(done), (2, 2))
        self.assertNotIn("last reload failed", done["STATUS"])
        self.assertReply(self.rcpt_reply(m.port), 250)

        m.stop()
        # The captures agree: only the sessions opened while "armed" was loaded met it.
        armed = [p for p in m.captures_now() if fault_summary(Capture(p))]
        self.assertEqual(len(armed), 3, [fault_summary(Capture(p)) for p in m.captures_now()])
        for p in armed:
            self.assertEqual(fault_summary(Capture(p)), [("armed", "reply", "reply", "rcpt")])

    def test_reload_applies_config_rules_and_reports_settings_that_need_a_restart(self):
        config = self.write_file("mailtap.toml", b"max_sessions = 10\n")
        m, ready = self.start(["--config", config])
        self.assertNotIn("needs restart", ready["STATUS"])
        targeted = ARMED_RULE + b'recipient = "armed@example.com"\n'
        self.write_file("mailtap.toml", b'max_sessions = 20\nrelay_name = "renamed"\n' + targeted)
        done = self.reload(m)
        self.assertEqual(reload_counts(done), (1, 0))
        self.assertIn("needs restart: max_sessions, relay_name", done["STATUS"])
        self.assertReply(self.rcpt_reply(m.port, to="armed@example.com"), 451, "4.7.1")
        # relay_name needs a restart: the relay's own replies still carry the old one.
        c = self.greeted_client(m.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\na bare\nline feed\r\n.\r\n")
        refused = c.reply()
        self.assertReply(refused, 550, "5.6.0")
        self.assertIn("by mailtap", refused.text, refused)
        self.assertNotIn("renamed", refused.text, refused)
        c.close()

if __name__ == "__main__":
    unittest.main()
