"""Records that tell the truth (issue 14, items 15, 16 and 22), tried with real peers: an
injected refusal that reads like a real one, captures that mask AUTH alike on both legs and
show the relay's own upstream commands for an SMTPS client, and a waterfall that names the
two TLS handshakes by leg, lists stages in time order and draws the sender's think time.
Peers: swaks (--tlsc, --auth PLAIN), the TLS upstream of tls_upstream.py (aiosmtpd requiring
STARTTLS and checking credentials), and a port with nothing listening (a real refusal).
Assertions are on what the client saw, the capture's records and `mailtap show`.
"""
import base64
import os
import re
import socket
import unittest

import test_tls
from harness import LOOPBACK, IntegrationTest, dot_unstuff, run_mailtap, show_json
from tls_upstream import PASSWORD, USER

FROM = "sender@example.test"
TO = "rcpt@example.test"
PLAIN_B64 = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())


def setUpModule():
    test_tls.setUpModule()      # the certificates


def tearDownModule():
    test_tls.tearDownModule()


def closed_port():
    """A loopback port with nothing listening: connecting to it is refused."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def transcript_rows(text):
    """`mailtap show` transcript rows as (prefix, text), continuation rows left out."""
    rows = []
    for line in text.split("\ntranscript\n", 1)[1].split("\n\nstages", 1)[0].splitlines():
        m = re.match(r"^\+ *[0-9.]+ ms  (\S\S) (.*)$", line)
        if m:
            rows.append((m.group(1), m.group(2)))
    return rows


class Records(IntegrationTest):
    # test_tls.TlsTest's peers and setup, borrowed (subclassing it would run its tests again).
    start_tls_mailtap = test_tls.TlsTest.start_tls_mailtap
    relay_to = test_tls.TlsTest.relay_to
    start_tls_upstream = test_tls.TlsTest.start_tls_upstream
    swaks_mail = test_tls.TlsTest.swaks_mail

    def setUp(self):
        super().setUp()
        self.state_home = os.path.join(self.workdir, "state")
        os.makedirs(self.state_home)
        self.env = dict(os.environ, XDG_STATE_HOME=self.state_home)

    def write_scenario(self, text):
        path = os.path.join(self.workdir, "scenario.toml")
        with open(path, "w") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------ item 15

    def test_injected_refusal_reads_like_a_real_one(self):
        port = closed_port()
        real = self.start_tls_mailtap("%s:%d" % (LOOPBACK, port), name="real")
        scenario = self.write_scenario('[[fault]]\nname = "down"\ntype = "upstream_unreachable"\n')
        injected = self.start_tls_mailtap("%s:%d" % (LOOPBACK, port), ["--scenario", scenario], name="injected")
        greetings = []
        for m in (real, injected):
            c = self.connect(m.port)
            greetings.append(c.reply())
            self.assertTrue(c.closed_by_peer(10))
        self.assertEqual(greetings[0].code, 421)
        self.assertEqual(greetings[1].lines, greetings[0].lines)
        self.assertNotIn("fault", greetings[1].text.lower())
        self.assertNotIn("down", greetings[1].text)
        real_cap, injected_cap = self.single_capture(real), self.single_capture(injected)
        self.assertEqual(real_cap.of_type("fault"), [])
        self.assertEqual([(f["rule"], f["decision"]) for f in injected_cap.of_type("fault")],
                         [("down", "unreachable")])
        self.assertEqual(real_cap.end["reason"], injected_cap.end["reason"])

    # ------------------------------------------------------------ items 16 and 22

    def test_smtps_capture_reads_the_same_on_both_legs(self):
        up = self.start_tls_upstream()
        mailtap = self.relay_to(up, ["--listen-tls", "%s:0" % LOOPBACK])
        self.swaks_mail(mailtap.tls_port, "--tlsc", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", PASSWORD)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)

        # AUTH: the same span masked on both legs, verb and mechanism kept.
        masked = b"AUTH PLAIN " + b"*" * len(PLAIN_B64) + b"\r\n"
        self.assertIn(masked, cap.bytes_of("client", "in"))
        self.assertIn(masked, cap.bytes_of("upstream", "out"))
        self.assertNotIn(PLAIN_B64, cap.bytes_of("upstream", "out"))

        # The relay's own EHLO and STARTTLS are commands of the upstream leg.
        relay_commands = [r["text"] for r in cap.of_type("command") if r["leg"] == "upstream"]
        self.assertEqual(len(relay_commands), 2, relay_commands)
        self.assertTrue(relay_commands[0].startswith("EHLO "), relay_commands)
        self.assertEqual(relay_commands[1], "STARTTLS")

        r = run_mailtap(["show", cap.path])
        self.assertEqual(r.returncode, 0, r.stderr)
        text = r.stdout.decode()
        rows = transcript_rows(text)
        self.assertIn(("U>", "STARTTLS"), rows, text)
        # No upstream reply without a command: every S< after the banner answers a C> or U>
        # (a 354 is answered again, at the end of data).
        owed, replies = 0, [t for p, t in rows if p == "S<"]
        self.assertTrue(replies[0].startswith("220"), rows)
        for prefix, row in rows[rows.index(("S<", replies[0])) + 1:]:
            if prefix in ("C>", "U>"):
                owed += 1
            elif prefix == "S<":
                self.assertGreater(owed, 0, "reply %r without a command in\n%s" % (row, text))
                if not row.startswith("354"):
                    owed -= 1

        # The waterfall: both handshakes by leg, rows by start time, think time drawn.
        stage_rows = text.split("\n\nstages", 1)[1].split("\n\ntransactions", 1)[0].splitlines()[2:]
        names = [re.split(r"\s{2,}", row.strip())[0] for row in stage_rows]
        self.assertIn("tls client", names, text)
        self.assertIn("tls upstream", names, text)
        self.assertNotIn("tls", names)
        starts = [float(row[14:].split()[0]) for row in stage_rows]
        self.assertEqual(starts, sorted(starts), text)
        self.assertIn("bar: - think,", text)
        shown = show_json(cap.path)
        self.assertEqual(sorted(s["leg"] for s in shown["stages"] if s["name"] == "tls"), ["client", "upstream"])
        self.assertTrue(any(e["kind"] == "command" and e["leg"] == "upstream" and e["text"] == "STARTTLS"
                            for e in shown["events"]))


if __name__ == "__main__":
    unittest.main()


class RecordedOnce(IntegrationTest):
    """Capture format 4 (captures/FORMAT.md `bytes_ref`): the relay's copy of a message is
    recorded by reference to the client's bytes, so a capture holds the body's base64 once;
    a copy the relay changed (normalized line endings) is recorded whole, as it was sent."""

    def send_message(self, port, wire):
        c = self.greeted_client(port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(wire)
        self.assertReply(c.reply(60), 250)
        self.quit(c)

    def test_the_body_is_recorded_once_and_reads_back_whole(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port))
        # 300 KiB of lines, some dot-stuffed: the relay forwards them as they came.
        lines = [(b"." if i % 7 == 0 else b"") + (b"line %06d " % i) + b"x" * 60 for i in range(4400)]
        body = b"Subject: once\r\nMessage-ID: <once@example.test>\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        self.send_message(mailtap.port, body + b".\r\n")
        (stored,) = rec.wait_for(1)
        self.assertEqual(stored["data"], dot_unstuff(body))
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        sent_upstream = cap.bytes_of("upstream", "out")
        self.assertIn(body + b".\r\n", sent_upstream, "the upstream copy reads back as the client's bytes")
        refs = cap.of_type("bytes_ref")
        self.assertTrue(refs, "no bytes_ref: the body was recorded twice")
        self.assertGreaterEqual(sum(r["length"] for r in refs), len(body))
        size = os.path.getsize(cap.path)
        self.assertLess(size, 1.6 * len(body), "capture of %d bytes for a %d-byte body" % (size, len(body)))
        # `mailtap show` reads the references back as bytes of their own leg.
        shown = show_json(cap.path)
        self.assertEqual(sum(e["size"] for e in shown["events"]
                             if e["kind"] == "bytes" and e["leg"] == "upstream" and e["dir"] == "out"),
                         len(sent_upstream))

    def test_a_normalized_copy_is_recorded_as_sent(self):
        rec = self.start_recorder()
        mailtap = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, rec.port),
                                     args=["--bare-line-endings", "normalize"])
        # Each line holds a bare LF, which normalize forwards as a space (protocol/data_framer.hpp).
        body = b"Subject: unix\r\n\r\n" + b"".join(b"unix\nline %04d\r\n" % i for i in range(200))
        self.send_message(mailtap.port, body + b".\r\n")
        (stored,) = rec.wait_for(1)
        as_sent = body.replace(b"unix\nline", b"unix line")
        self.assertEqual(stored["data"], as_sent)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        sent_upstream = cap.bytes_of("upstream", "out")
        self.assertIn(as_sent, sent_upstream)
        self.assertNotIn(b"unix\nline", sent_upstream, "a bare LF recorded as sent upstream")

    def test_a_bdat_body_is_recorded_once(self):
        mailtap = self.start_mailtap()    # the built-in sink takes BDAT (CHUNKING)
        payload = b"Subject: chunks\r\n\r\n" + b"".join(b"bdat line %05d %s\r\n" % (i, b"y" * 50)
                                                          for i in range(3000))
        c = self.greeted_client(mailtap.port)
        self.assertReply(c.command("MAIL FROM:<%s>" % FROM), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        half = len(payload) // 2
        c.send(b"BDAT %d\r\n" % half + payload[:half])
        self.assertReply(c.reply(60), 250)
        c.send(b"BDAT %d LAST\r\n" % (len(payload) - half) + payload[half:])
        self.assertReply(c.reply(60), 250)
        self.quit(c)
        cap = self.single_capture(mailtap)
        self.assertCaptureComplete(cap)
        self.assertIn(payload, cap.bytes_of("upstream", "out").replace(b"BDAT %d LAST\r\n" % (len(payload) - half), b""))
        self.assertTrue(cap.of_type("bytes_ref"), "no bytes_ref: the BDAT payload was recorded twice")
        self.assertLess(os.path.getsize(cap.path), 1.6 * len(payload))
