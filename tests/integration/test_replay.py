"""`mailtap replay server|client` (issue 8 items 1 and 2) on captures made in the test through
the relay, never on hand-written ones (but the malformed one):

- replay server: swaks against a replay of a rejected session (policies/scenarios
  mailbox-full + slow-upstream) hears the same replies and codes, each after the recorded
  delay (within 10 ms, measured by swaks' own --show-time-lapse); STARTTLS is offered and
  works where the recording had it; a client that sends another command is reported (JSON)
  and the exit code says so; --sessions serves several clients.
- replay client: a capture of a session with smtp-sink replays against smtp-sink with
  every reply matching (exit 0); against `smtp-sink -r rcpt` it diverges (exit 1) and the
  diff names the RCPT reply; a directory of 200 captures replays concurrently (-j) in
  bounded time and the JUnit file parses; a malformed capture is one line and exit 2;
  AUTH is skipped without credentials and run with them (aiosmtpd with an authenticator).

Assertions are on replies, exit codes and the JSON documents (replay/README.md), never on prose.
"""

import base64
import json
import os
import re
import select
import signal
import smtplib
import socket
import subprocess
import time
import unittest
import xml.etree.ElementTree as ET

from harness import (Capture, IntegrationTest, LOOPBACK, SCENARIOS_DIR, SMTP_SOURCE, Process, ScriptedAnswers,
                     SwaksTranscript, capture_has_end, free_port, mailtap_bin, parse_replies, run_mailtap, scaled,
                     wait_until)
from postfix_instance import SendingPostfix

TO = "a@example.com"
READY_RE = re.compile(r"^mailtap replay: listening on 127\.0\.0\.1:(\d+)( \(TLS from connect(, as recorded on an "
                      r"SMTPS listener|: --tls-on-connect yes)\))?, replaying (.+) \((\d+) steps\)$")
# swaks --show-time-lapse: "=== response in 0.299s" before each reply it times.
LAPSE_RE = re.compile(r"^=== response in (\d+\.\d+)s$")
# What the test allows between a recorded delay and the one the replay plays: never more than
# 10 ms early (a timer fires no earlier than asked), and up to 60 ms late, since on two cores
# shared with the rest of `ctest -j2` (a browser, a package build) the replay server or swaks
# can wait that long for a core (two full runs saw 18 ms and 45 ms).
DELAY_EARLY_S = scaled(0.010)
DELAY_LATE_S = scaled(0.060)


def assert_delay(test, lapse, want, what):
    test.assertGreaterEqual(lapse - want, -DELAY_EARLY_S, what)
    test.assertLessEqual(lapse - want, DELAY_LATE_S, what)


class ReplayServer(Process):
    """`mailtap replay server CAPTURE --listen 127.0.0.1:0 ARGS`; the port from its ready line."""

    def __init__(self, workdir, capture, args=(), env=None, name="replay-server"):
        argv = [mailtap_bin(), "replay", "server", capture, "--listen", "%s:0" % LOOPBACK, *args]
        super().__init__(argv, workdir, name, stdout=subprocess.PIPE, env=env)
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + scaled(20)
        data = b""
        while b"\n" not in data:
            if time.monotonic() >= deadline:
                raise AssertionError("replay server printed no ready line; stderr: %s" % self.stderr_text())
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise AssertionError("replay server exited: %s" % self.stderr_text())
                data += chunk
        line, self.rest = data.split(b"\n", 1)
        if line.startswith(b"{"):   # --json: the ready line is a JSON document too
            self.ready = json.loads(line)
            self.port = int(self.ready["listening"].rsplit(":", 1)[1])
            return
        m = READY_RE.match(line.decode())
        if not m:
            raise AssertionError("unexpected ready line %r" % line)
        self.port = int(m.group(1))
        self.tls_note = m.group(2) or ""

    def finish(self, timeout=30):
        """(exit code, stdout after the ready line) once it has exited."""
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.rest + out).decode("utf-8", "replace")


def timed_exchanges(text):
    """swaks -stl output as [(client line or None, Reply, seconds)], one per timed reply."""
    out, lapse, lines, last_client = [], None, [], None
    for line in text.splitlines():
        m = LAPSE_RE.match(line)
        if m:
            lapse = float(m.group(1))
            continue
        m = re.match(r"^<[-~*]{1,2} +(\d{3}[- ]?.*)$", line)
        if m:
            lines.append(m.group(1).encode())
            if m.group(1)[3:4] != "-":
                out.append((last_client, parse_replies(b"\r\n".join(lines) + b"\r\n")[0], lapse))
                lines, lapse, last_client = [], None, None
            continue
        m = re.match(r"^ ?[-~*]{1,2}> ?(.*)$", line)
        if m:
            last_client = m.group(1)
    return out


def recorded_delays(cap):
    """The delay of each reply the client heard, in seconds, from the capture's client leg:
    the greeting from the session's start, every other reply from the command before it."""
    sent = [r["t_us"] for r in cap.records if r.get("type") == "bytes" and r["leg"] == "client" and r["dir"] == "in"]
    heard = [r["t_us"] for r in cap.records if r.get("type") == "bytes" and r["leg"] == "client" and r["dir"] == "out"]
    delays = [heard[0] / 1e6]
    for i, t in enumerate(heard[1:]):
        delays.append((t - sent[i]) / 1e6)
    return delays


def replay_client(*args, timeout=120, **kw):
    return run_mailtap(["replay", "client", *args], timeout=timeout, **kw)


class ReplayTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.workdir, "state"))

    def record(self, swaks_args=(), upstream="builtin", scenarios=(), count=1, relay_args=(), name="mailtap"):
        """Runs swaks through a relay (`count` sessions) and returns the captures (of its own
        directory, named after `name`)."""
        args = list(relay_args)
        for s in scenarios:
            args += ["--scenario", os.path.join(SCENARIOS_DIR, s)]
        m = self.start_mailtap(upstream=upstream, args=args, env=self.env, name=name)
        for _ in range(count):
            self.swaks(m.port, "--to", TO, *swaks_args)
        caps = m.wait_captures(count)
        m.stop()
        return caps

    def replay_server(self, capture, *args):
        s = ReplayServer(self.workdir, capture, args, env=self.env)
        self.addCleanup(s.stop)
        return s


class ReplayServerTest(ReplayTest):

    def test_swaks_hears_the_recorded_replies_with_their_delays(self):
        cap = self.record(["-stl"], scenarios=["mailbox-full.toml", "slow-upstream.toml"])[0]
        recorded_replies = parse_replies(cap.bytes_of("client", "out"))
        self.assertEqual([r.code for r in recorded_replies], [220, 250, 250, 552, 221])
        delays = recorded_delays(cap)
        self.assertGreater(delays[1], 0.15, "slow-upstream delays EHLO by 300 ms +- 100 ms")

        server = self.replay_server(cap.path)
        status, text = self.swaks(server.port, "--to", TO, "-stl")
        live = timed_exchanges(text)
        code, report = server.finish()
        self.assertEqual(code, 0, report)
        self.assertEqual([(r.code, r.texts) for _, r, _ in live], [(r.code, r.texts) for r in recorded_replies])
        self.assertEqual(len(live), len(delays))
        for (client, reply, lapse), want in zip(live, delays):
            self.assertIsNotNone(lapse, "swaks timed every reply")
            assert_delay(self, lapse, want, "reply %d to %r after %.3f s, recorded %.3f s" % (reply.code, client, lapse, want))

    def test_timing_x2_plays_every_delay_twice_as_fast(self):
        cap = self.record(scenarios=["mailbox-full.toml", "slow-upstream.toml"])[0]
        delays = recorded_delays(cap)
        server = self.replay_server(cap.path, "--timing", "x2")
        status, text = self.swaks(server.port, "--to", TO, "-stl")
        live = timed_exchanges(text)
        self.assertEqual(server.finish()[0], 0)
        self.assertEqual(len(live), len(delays))
        for (client, reply, lapse), want in zip(live, delays):
            assert_delay(self, lapse, want / 2, "reply %d to %r after %.3f s, recorded %.3f s" % (reply.code, client, lapse, want))

    def test_the_injected_reply_is_reported_as_injected(self):
        cap = self.record(scenarios=["mailbox-full.toml"])[0]
        server = self.replay_server(cap.path, "--json", "--timing", "fast")
        self.swaks(server.port, "--to", TO)
        code, out = server.finish()
        self.assertEqual(code, 0, out)
        doc = json.loads(out.splitlines()[0])
        self.assertEqual(doc["result"], "followed")
        rcpt = [p for p in doc["played"] if p["live"].startswith("RCPT")][0]
        self.assertEqual((rcpt["code"], rcpt["source"], rcpt["rule"]), (552, "injected", "mailbox-full"))
        ehlo = [p for p in doc["played"] if p["live"].startswith("EHLO")][0]
        self.assertEqual(ehlo["source"], "server")

    def test_a_different_command_is_reported(self):
        cap = self.record(scenarios=["mailbox-full.toml"])[0]
        server = self.replay_server(cap.path, "--json", "--timing", "fast")
        c = self.connect(server.port)
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.command("EHLO swaks.test").code, 250)
        mail = [r for r in cap.of_type("command") if r["text"].startswith("MAIL")][0]["text"]
        self.assertEqual(c.command(mail).code, 250)
        # The recorded reply is played whatever the command: the client hears the recording.
        self.assertEqual(c.command("RCPT TO:<someone.else@example.com>").code, 552)
        self.assertEqual(c.command("QUIT").code, 221)
        code, out = server.finish()
        self.assertEqual(code, 1, out)
        doc = json.loads(out.splitlines()[0])
        self.assertEqual(doc["result"], "diverged")
        self.assertEqual([(d["kind"], d["step"], d["recorded"], d["live"]) for d in doc["divergences"]],
                         [("command", 3, "RCPT TO:<%s>" % TO, "RCPT TO:<someone.else@example.com>")])

    def test_starttls_is_offered_and_works_as_recorded(self):
        cap = self.record(["-tls"], scenarios=["mailbox-full.toml"])[0]
        self.assertTrue([r for r in cap.of_type("tls") if r["leg"] == "client"], "the recording used STARTTLS")
        server = self.replay_server(cap.path, "--timing", "fast", "--json")
        status, text = self.swaks(server.port, "--to", TO, "-tls")
        code, out = server.finish()
        self.assertEqual(code, 0, out)
        t = SwaksTranscript(text)
        self.assertEqual(t.reply_to("STARTTLS").code, 220)
        self.assertEqual(t.reply_to("RCPT").code, 552)
        self.assertIn("TLS started", text)

    def test_an_smtps_session_is_replayed_over_implicit_tls_both_ways(self):
        m = self.start_mailtap(args=["--listen-tls", "%s:0" % LOOPBACK], env=self.env)
        self.swaks(m.tls_port, "--to", TO, "--tlsc")
        cap = m.wait_captures(1)[0]
        m.stop()
        server = self.replay_server(cap.path, "--timing", "fast", "--sessions", "2", "--json")
        self.assertIs(server.ready["tls_on_connect"], True)   # a plaintext client would hang: say so
        status, text = self.swaks(server.port, "--to", TO, "--tlsc")
        self.assertIn("TLS started", text)
        self.assertEqual(SwaksTranscript(text).reply_to("RCPT").code, 250)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, server.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertEqual({s["status"] for s in json.loads(r.stdout)["steps"]}, {"matched"})
        code, out = server.finish()
        # swaks's message has its own Date: noted for the first session, not a divergence.
        docs = [json.loads(l) for l in out.splitlines()]
        self.assertEqual([[d["kind"] for d in doc["divergences"]] for doc in docs], [[], []])
        self.assertEqual([[d["kind"] for d in doc["noted"]] for doc in docs], [["message"], []])
        self.assertEqual(code, 0)

    def test_an_smtps_session_is_replayed_in_plaintext_with_tls_on_connect_no(self):
        # A newcomer trial: a capture from the SMTPS listener could not be replayed against a
        # plaintext server (port 25), and the report said only "the TLS handshake failed".
        m = self.start_mailtap(args=["--listen-tls", "%s:0" % LOOPBACK], env=self.env)
        self.swaks(m.tls_port, "--to", TO, "--tlsc")
        cap = m.wait_captures(1)[0]
        m.stop()
        plain = self.replay_server(cap.path, "--timing", "fast", "--sessions", "3", "--json",
                                   "--tls-on-connect", "no")
        self.assertIs(plain.ready["tls_on_connect"], False)
        status, text = self.swaks(plain.port, "--to", TO)   # no TLS at all
        self.assertNotIn("TLS started", text)
        self.assertEqual(SwaksTranscript(text).reply_to("RCPT").code, 250)
        # As recorded, the replay client starts TLS at connect, and says why it failed.
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, plain.port), "--json")
        self.assertEqual(r.returncode, 1, r.stdout.decode() + r.stderr.decode())
        self.assertIn("--tls-on-connect no", json.loads(r.stdout)["steps"][0]["note"])
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, plain.port), "--json", "--tls-on-connect", "no")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertEqual({s["status"] for s in json.loads(r.stdout)["steps"]}, {"matched"})
        plain.finish()
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, plain.port), "--tls-on-connect", "maybe")
        self.assertEqual(r.returncode, 2)
        # The ready line says where TLS from connect comes from: the recording, or the flag (a
        # newcomer's trial: a plaintext capture with --tls-on-connect yes was said to be an
        # SMTPS listener's).
        self.assertEqual(self.replay_server(cap.path, "--sessions", "1").tls_note,
                         " (TLS from connect, as recorded on an SMTPS listener)")
        m2 = self.start_mailtap(env=self.env, name="plain-relay")
        self.swaks(m2.port, "--to", TO)
        plain_cap = m2.wait_captures(1)[0]
        self.assertEqual(self.replay_server(plain_cap.path, "--sessions", "1", "--tls-on-connect", "yes").tls_note,
                         " (TLS from connect: --tls-on-connect yes)")
        self.assertIn(b"--tls-on-connect 'maybe': expected as-recorded, yes or no", r.stderr)

    def test_the_live_clients_auth_material_is_masked_in_the_report(self):
        user, password = "alice", "S3cret!"
        plain = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
        needles = [password, plain, base64.b64encode(user.encode()).decode(),
                   base64.b64encode(password.encode()).decode()]
        for mechanism, live in (("PLAIN", ["AUTH PLAIN " + "*" * len(plain)]),
                                ("LOGIN", ["AUTH LOGIN", "*" * len(needles[2]), "*" * len(needles[3])])):
            auth = ["-a", mechanism, "-au", user, "-ap", password]
            cap = self.record(auth, name="mailtap-" + mechanism)[0]
            server = self.replay_server(cap.path, "--json", "--timing", "fast")
            status, text = self.swaks(server.port, "--to", TO, *auth)
            self.assertEqual(SwaksTranscript(text).reply_to("AUTH").code // 100, 3 if mechanism == "LOGIN" else 2)
            code, out = server.finish()
            doc = json.loads(out.splitlines()[0])
            # swaks's message has its own Date: the commands, AUTH included, are as recorded.
            self.assertEqual([d for d in doc["divergences"] if d["kind"] != "message"], [], out)
            played = [p["live"] for p in doc["played"]]
            start = played.index(live[0])
            self.assertEqual(played[start:start + len(live)], live, mechanism)
            for needle in needles:
                self.assertNotIn(needle, out, mechanism)

    def test_lowercase_verbs_follow_the_recording(self):
        # Python's smtplib sends "mail FROM:" and "rcpt TO:" (RFC 5321 2.4: verbs are not case sensitive).
        cap = self.record(scenarios=["mailbox-full.toml"])[0]
        server = self.replay_server(cap.path, "--json", "--timing", "fast")
        client = smtplib.SMTP(LOOPBACK, server.port, local_hostname="swaks.test", timeout=20)
        self.assertEqual(client.ehlo()[0], 250)
        mail = [r for r in cap.of_type("command") if r["text"].startswith("MAIL")][0]["text"]
        self.assertEqual(client.mail(mail.split(":", 1)[1].strip("<>"))[0], 250)
        self.assertEqual(client.rcpt(TO)[0], 552)
        client.quit()
        code, out = server.finish()
        doc = json.loads(out.splitlines()[0])
        self.assertEqual([p["live"].split(" ")[0] for p in doc["played"]], ["ehlo", "mail", "rcpt", "quit"])
        self.assertEqual((code, doc["result"], doc["divergences"]), (0, "followed", []), out)

    def test_a_new_message_is_noted_and_counted_only_with_compare_message(self):
        cap = self.record()[0]
        for args, want_code, counted in (((), 0, []), (("--compare-message",), 1, ["message"])):
            server = self.replay_server(cap.path, "--json", "--timing", "fast", *args)
            status, text = self.swaks(server.port, "--to", TO)
            self.assertEqual(SwaksTranscript(text).end_of_data_replies()[0].code, 250)
            code, out = server.finish()
            doc = json.loads(out.splitlines()[0])
            self.assertEqual([d["kind"] for d in doc["divergences"]], counted, out)
            self.assertEqual([d["kind"] for d in doc["noted"]], [] if counted else ["message"], out)
            self.assertEqual((code, doc["result"]), (want_code, "diverged" if counted else "followed"), out)

    def test_an_idle_client_is_closed_with_421_after_client_idle(self):
        cap = self.record(scenarios=["mailbox-full.toml"])[0]
        server = self.replay_server(cap.path, "--json", "--timing", "fast", "--client-idle", "1s")
        c = self.connect(server.port)
        self.assertEqual(c.reply().code, 220)
        started = time.monotonic()
        self.assertEqual(c.command("EHLO swaks.test").code, 250)
        # Then silence: the relay's client_idle answer, and the connection closed.
        self.assertReply(c.reply(timeout=scaled(10)), 421, "4.4.2")
        self.assertTrue(c.closed_by_peer(scaled(5)))
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        code, out = server.finish()
        doc = json.loads(out.splitlines()[0])
        self.assertEqual((code, doc["result"]), (1, "diverged"), out)
        self.assertEqual([(d["kind"], d["step"]) for d in doc["divergences"]], [("timeout", 2)])

    def test_sigterm_answers_the_live_client_421_and_reports_its_session(self):
        """A trial: SIGTERM dropped the live session without a reply, printed no report and
        exited 0. Under --json, stdout is JSON documents only (the ready line included)."""
        cap = self.record()[0]
        server = self.replay_server(cap.path, "--json", "--timing", "fast")
        self.assertEqual(server.ready["steps"], 6)
        c = self.connect(server.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO c.test"), 250)
        server.proc.send_signal(signal.SIGTERM)
        self.assertReply(c.reply(), 421, "4.3.2")
        code, out = server.finish()
        self.assertEqual(code, 1, out)
        docs = [json.loads(line) for line in out.splitlines()]
        self.assertEqual(len(docs), 1, out)
        self.assertEqual([d["kind"] for d in docs[0]["divergences"]], ["stopped"], docs[0])
        # Its EHLO names another host than swaks did: noted, not counted (a newcomer's trial).
        self.assertEqual([(d["kind"], d["recorded"], d["live"]) for d in docs[0]["noted"]],
                         [("client_name", "EHLO swaks.test", "EHLO c.test")], docs[0])
        self.assertEqual(docs[0]["divergences"][-1]["step"], 2, docs[0])

    def test_postfix_resending_another_message_declares_another_size_and_follows(self):
        # A trial with Postfix as the live client: its MAIL always carries SIZE=, and a new
        # message's differs, so every replay diverged (exit 1). It is noted, as the message is.
        recorder = self.start_mailtap(env=self.env)
        a = SendingPostfix(recorder.port)
        self.addCleanup(a.cleanup)
        a.start()
        a.inject("sender@a.test", TO, b"Subject: first\r\n\r\nshort\r\n")
        cap = recorder.wait_captures(1)[0]
        wait_until(lambda: capture_has_end(cap.path), 30, "the recorded session's end")
        recorded_mail = [r["text"] for r in Capture(cap.path).of_type("command") if r["text"].startswith("MAIL")]
        self.assertRegex(recorded_mail[0], r" SIZE=\d+", recorded_mail)
        recorder.stop()
        server = self.replay_server(cap.path, "--json", "--timing", "fast")
        live = SendingPostfix(server.port, name="a2")
        self.addCleanup(live.cleanup)
        live.start()
        live.inject("sender@a.test", TO, b"Subject: second\r\n\r\na longer body than the first\r\n")
        code, out = server.finish(timeout=60)
        doc = json.loads(out.splitlines()[0])
        self.assertEqual((code, doc["result"], doc["divergences"]), (0, "followed", []), out)
        noted_mail = [d for d in doc["noted"] if d["recorded"].startswith("MAIL")]
        self.assertEqual([d["kind"] for d in noted_mail], ["message"], doc["noted"])
        self.assertNotEqual(noted_mail[0]["live"], noted_mail[0]["recorded"])

    def test_a_message_ends_where_the_relay_ended_it_under_bare_line_endings_normalize(self):
        """A reviewer's reproduction: under --bare-line-endings normalize the relay ended a
        message at "\n.\n" and read what followed as commands (the script cuts the recording
        so), but the replay server framed every live message raw: only CRLF.CRLF ended it, so
        the reply to the message never came and the report said the client left at step 4.
        Normalize no longer ends a message there (each bare CR or LF is a space); a capture
        recorded before, whose header has no normalize_to, still replays as it was recorded.
        Such a capture is made here from a session whose message ended at CRLF.CRLF: the header
        loses normalize_to and the client's bytes get "\n.\n" where the older relay read it."""
        m = self.start_mailtap(args=["--bare-line-endings", "normalize"], env=self.env)
        message = b"Subject: x\r\n\r\nbody\n.\nRSET\r\n"

        def converse(port, message):
            c = self.greeted_client(port, "c.test")
            self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
            self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
            self.assertReply(c.command("DATA"), 354)
            c.send(message)
            self.assertReply(c.reply(timeout=scaled(10)), 250)   # the message, queued
            self.assertReply(c.reply(timeout=scaled(10)), 250)   # RSET
            self.assertReply(c.command("QUIT"), 221)

        converse(m.port, b"Subject: x\r\n\r\nbody\r\n.\r\nRSET\r\n")
        cap = m.wait_captures(1)[0]
        wait_until(lambda: capture_has_end(cap.path), 30, "the recorded session's end")
        m.stop()
        with open(cap.path, encoding="utf-8") as f:
            lines = [json.loads(l) for l in f]
        self.assertEqual((lines[0]["bare_eol"], lines[0]["normalize_to"]), ("normalize", "space"))
        del lines[0]["normalize_to"]
        edited = 0
        for rec in lines:
            if rec["type"] == "bytes" and rec["leg"] == "client" and "body\r\n.\r\n" in rec.get("latin1", ""):
                rec["latin1"] = rec["latin1"].replace("body\r\n.\r\n", "body\n.\n")
                edited += 1
        self.assertEqual(edited, 1)
        self.assertFalse([r for r in lines if r["type"] == "bytes_ref"], "offsets would need moving")
        older = self.write_file("older-normalize.jsonl",
                                "".join(json.dumps(r) + "\n" for r in lines).encode())
        server = self.replay_server(older, "--json", "--timing", "fast")
        self.assertEqual(server.ready["steps"], 7)
        converse(server.port, message)
        code, out = server.finish()
        doc = json.loads(out.splitlines()[0])
        self.assertEqual((code, doc["result"], doc["divergences"]), (0, "followed", []), out)
        self.assertEqual([p["code"] for p in doc["played"]], [250, 250, 250, 354, 250, 250, 221], out)
        self.assertEqual(doc["played"][5]["live"], "RSET", out)

    def test_several_sessions_each_from_the_start(self):
        cap = self.record(scenarios=["mailbox-full.toml"])[0]
        server = self.replay_server(cap.path, "--timing", "fast", "--sessions", "2", "--json")
        for _ in range(2):
            status, text = self.swaks(server.port, "--to", TO)
            self.assertEqual(SwaksTranscript(text).reply_to("RCPT").code, 552)
        code, out = server.finish()
        self.assertEqual(code, 0, out)
        self.assertEqual([json.loads(l)["result"] for l in out.splitlines()], ["followed", "followed"])


class ReplayClientTest(ReplayTest):

    def test_replay_against_smtp_sink_matches(self):
        sink = self.start_smtp_sink(dump=False)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port))[0]
        fresh = self.start_smtp_sink(dump=False, name="smtp-sink-2")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, fresh.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual(doc["result"], "matched")
        self.assertEqual([s["status"] for s in doc["steps"]], ["matched"] * 7)
        self.assertEqual([s["live"]["code"] for s in doc["steps"]], [220, 250, 250, 250, 354, 250, 221])
        wait_until(lambda: fresh.messages_counted() >= 1, 10, "the replayed message at smtp-sink")

    def test_a_plaintext_capture_forced_into_tls_from_connect_says_the_flag_asked_for_it(self):
        # A trial: `replay client plain.jsonl --tls-on-connect yes` against a plaintext server
        # said of every step "the capture was recorded with TLS from connect, on an SMTPS
        # listener": false, the user forced TLS on a plaintext recording.
        m = self.start_mailtap(env=self.env)
        self.swaks(m.port, "--to", TO)
        cap = m.wait_captures(1)[0]
        m.stop()
        sink = self.start_smtp_sink(dump=False)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, sink.port), "--json", "--tls-on-connect", "yes",
                          "--reply-timeout", "5")
        self.assertEqual(r.returncode, 1, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual((doc["steps"][0]["status"], doc["steps"][1]["status"]), ("no_reply", "not_sent"), r.stdout)
        for s in doc["steps"]:
            self.assertNotIn("SMTPS", s["note"], s)
            self.assertNotIn("recorded with TLS", s["note"], s)
            self.assertIn("--tls-on-connect yes", s["note"], s)
            self.assertIn("recorded in plaintext", s["note"], s)

    def test_a_server_hanging_up_where_the_recorded_one_hung_up_matches(self):
        # A trial: smtp-sink -q RCPT hangs up at RCPT without a reply; through the relay the
        # client heard the relay's own 421 4.4.2 for it. Replayed against the same smtp-sink, the
        # replay reported DIVERGED ("the server closed the connection") and exit 1.
        sink = self.start_smtp_sink(args=["-q", "rcpt"], dump=False)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port))[0]
        self.assertEqual(cap.end["reason"], "upstream_closed")
        relay_421 = [r for r in cap.of_type("reply") if r["leg"] == "client" and r["code"] == 421]
        self.assertEqual([r["enhanced"] for r in relay_421], ["4.4.2"])
        fresh = self.start_smtp_sink(args=["-q", "rcpt"], dump=False, name="smtp-sink-2")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, fresh.port), "--json", "--reply-timeout", "10")
        doc = json.loads(r.stdout)
        (rcpt,) = [s for s in doc["steps"] if s["stage"] == "rcpt"]
        self.assertEqual((rcpt["status"], rcpt["live"], rcpt["recorded"]["source"]), ("matched", None, "relay"),
                         r.stdout)
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)
        # A server that answers there went on where the recorded one hung up.
        plain = self.start_smtp_sink(dump=False, name="smtp-sink-3")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, plain.port), "--json", "--reply-timeout", "10")
        doc = json.loads(r.stdout)
        (rcpt,) = [s for s in doc["steps"] if s["stage"] == "rcpt"]
        self.assertEqual((rcpt["status"], rcpt["live"]["code"]), ("diverged", 250), r.stdout)
        self.assertEqual(r.returncode, 1, r.stdout)

    def test_the_destinations_unsolicited_421_and_close_are_expected_of_the_live_server(self):
        # A trial with Postfix (smtpd_hard_error_limit = 1): RCPT answered 454, then 421 4.7.0
        # "too many errors" and the close. Replayed against a Postfix without the limit (454, no
        # 421, no close), the replay hung up by itself and said matched, exit 0.
        def refuse_then_leave(conn, line):
            conn.sock.sendall(b"454 4.7.1 <x@elsewhere.test>: Relay access denied\r\n"
                              b"421 4.7.0 scripted.test Error: too many errors\r\n")
            return ScriptedAnswers.CLOSE
        limited = ScriptedAnswers(answers={b"RCPT": refuse_then_leave})
        self.addCleanup(limited.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, limited.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<x@elsewhere.test>"), 454)
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "upstream_closed")
        # Against a server that neither says 421 nor closes: a divergence, within --reply-timeout.
        lax = ScriptedAnswers(answers={b"RCPT": b"454 4.7.1 <x@elsewhere.test>: Relay access denied\r\n"})
        self.addCleanup(lax.stop)
        began = time.monotonic()
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, lax.port), "--json", "--reply-timeout", "2")
        self.assertLess(time.monotonic() - began, 30)
        doc = json.loads(r.stdout)
        self.assertEqual([(s["stage"], s["status"]) for s in doc["steps"][-2:]],
                         [("rcpt", "matched"), ("unsolicited", "no_reply")], r.stdout)
        self.assertEqual(doc["steps"][-1]["recorded"]["code"], 421)
        self.assertEqual((r.returncode, doc["result"]), (1, "diverged"), r.stdout)
        # Against one that does as the recorded one did: matched.
        again = ScriptedAnswers(answers={b"RCPT": refuse_then_leave})
        self.addCleanup(again.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, again.port), "--json", "--reply-timeout", "10")
        doc = json.loads(r.stdout)
        self.assertEqual((doc["steps"][-1]["stage"], doc["steps"][-1]["status"], doc["steps"][-1]["live"]["code"]),
                         ("unsolicited", "matched", 421), r.stdout)
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)

    def test_nothing_is_pipelined_to_a_live_server_that_offers_no_pipelining(self):
        # A trial: the replay pipelined MAIL, RCPT and DATA, as the recorded client had, to a live
        # server whose EHLO reply offered no PIPELINING (RFC 2920).
        m = self.start_mailtap(env=self.env)   # the built-in sink offers PIPELINING
        c = self.greeted_client(m.port, "c.test")
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % TO.encode())
        self.assertEqual([r.code for r in c.replies(3)], [250, 250, 354])
        c.send(b"Subject: x\r\n\r\nhello\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        self.quit(c)
        cap = m.wait_captures(1)[0]
        m.stop()
        waiting = []   # per MAIL and RCPT: whether the next command was already in when it was answered

        def answer_after_a_look(reply):
            def answer(conn, line):
                time.sleep(scaled(0.3))
                try:
                    pending = conn.sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except (BlockingIOError, socket.timeout):
                    pending = b""
                after = conn.raw.split(line + b"\r\n", 1)[1] if line + b"\r\n" in conn.raw else b""
                waiting.append(bool(after or pending))
                return reply
            return answer
        no_pipelining = ScriptedAnswers(answers={
            b"EHLO": b"250-scripted.test\r\n250 ENHANCEDSTATUSCODES\r\n",
            b"MAIL": answer_after_a_look(b"250 2.1.0 Ok\r\n"),
            b"RCPT": answer_after_a_look(b"250 2.1.5 Ok\r\n")})
        self.addCleanup(no_pipelining.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, no_pipelining.port), "--json")
        doc = json.loads(r.stdout)
        conn = no_pipelining.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual(conn.commands[1:4], [b"MAIL FROM:<a@example.test>", b"RCPT TO:<%s>" % TO.encode(), b"DATA"])
        self.assertEqual(waiting, [False, False], "a command was sent before the reply to the one before it")
        self.assertEqual(len(conn.messages), 1)
        notes = {s["stage"]: s["note"] for s in doc["steps"] if s["stage"] in ("rcpt", "data")}
        for stage, note in notes.items():
            self.assertIn("PIPELINING", note, stage)
        self.assertEqual({s["status"] for s in doc["steps"] if s["stage"] != "ehlo"}, {"matched"}, r.stdout)

    def test_reply_timeout_ends_a_replay_against_a_server_that_stops_answering(self):
        # A hostile-peer trial: a live server that never answered held the replay for the fixed
        # 120 s. --reply-timeout sets the wait; the step is no_reply, the replay diverged.
        cap = self.record()[0]
        silent = ScriptedAnswers(answers={b"MAIL": b""})   # reads MAIL, says nothing
        self.addCleanup(silent.stop)
        began = time.monotonic()
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, silent.port), "--reply-timeout", "1", "--json")
        self.assertLess(time.monotonic() - began, 60)
        self.assertEqual(r.returncode, 1, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual([s["status"] for s in doc["steps"] if s["stage"] == "mail"], ["no_reply"], r.stdout)
        bad = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, silent.port), "--reply-timeout", "0")
        self.assertEqual(bad.returncode, 2)
        self.assertIn(b"--reply-timeout '0'", bad.stderr)

    def test_no_bdat_goes_to_a_live_server_that_offers_no_chunking(self):
        # A hostile trial: a BDAT chunk holding "MAIL FROM:...RCPT TO:<victim>...DATA..." went to
        # smtp-sink, which offers no CHUNKING, read it as commands and delivered a message to the
        # victim. The replay sends no BDAT there, and closes.
        m = self.start_mailtap(env=self.env)   # the built-in sink offers CHUNKING
        c = self.greeted_client(m.port)
        chunk = (b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n"
                 b"Subject: EVIL\r\n\r\nx\r\n.\r\n")
        self.assertReply(c.command("MAIL FROM:<good@x.test>"), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk)
        self.assertReply(c.reply(), 250)
        self.quit(c)
        cap = m.wait_captures(1)[0]
        sink = self.start_smtp_sink(dump=False)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, sink.port), "--json")
        self.assertEqual(r.returncode, 1, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        (bdat,) = [s for s in doc["steps"] if s["stage"] == "bdat"]
        self.assertEqual(bdat["status"], "skipped", bdat)
        self.assertIn("offered no CHUNKING", bdat.get("note", ""), bdat)
        wait_until(lambda: self.sessions_ended(sink) >= 1, 10, "the replay's session ended at smtp-sink")
        self.assertEqual(sink.messages_counted(), 0)

    def sessions_ended(self, sink):
        """How many sessions smtp-sink has counted as ended (its -c counter `sess=N`)."""
        counts = re.findall(r"sess=(\d+)", sink.stdout_text())
        return int(counts[-1]) if counts else 0

    def dumps_after_sessions_ended(self, sink, n):
        """smtp-sink's dumps once it has finished with the first `n` sessions' ends.
        smtp-sink prints `sess=N` first in its disconnect handler, and only then removes the dump
        of a transaction the session left unfinished (a file it creates at MAIL and writes
        buffered): read in between, that dump is an empty file (a full run once saw it so). One
        event loop runs smtp-sink, so its greeting to a new connection, sent by a later handler,
        comes after that handler has returned: a barrier, not a guess at how long it takes."""
        wait_until(lambda: self.sessions_ended(sink) >= n, 10, "the replay's session ended at smtp-sink")
        with socket.create_connection((LOOPBACK, sink.port), timeout=10) as probe:
            greeting = b""
            while not greeting.endswith(b"\r\n"):
                chunk = probe.recv(512)
                self.assertTrue(chunk, "smtp-sink closed before its greeting")
                greeting += chunk
            self.assertTrue(greeting.startswith(b"220"), greeting)
        return sink.dumps()

    def test_a_message_a_disconnect_fault_cut_off_before_its_end_is_not_delivered_by_the_replay(self):
        """A disconnect fault at data_end withholds the dot and closes the upstream: the
        destination never got the message whole. (Before, the replay sent it whole, and the
        live server accepted a message the recording never delivered; a trial before that saw
        it reported "matched".) Now the replay sends the body as the destination got it and
        closes without ending it: nothing delivered, the step skipped, the verdict the
        recording's."""
        sink = self.start_smtp_sink(dump=False)
        scenario = os.path.join(self.workdir, "cut.toml")
        with open(scenario, "w") as f:
            f.write('[[fault]]\nname = "cut"\ntype = "disconnect"\nphase = "data_end"\n')
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port), relay_args=["--scenario", scenario])[0]
        self.assertEqual(cap.end["reason"], "fault")
        self.assertEqual(sink.messages_counted(), 0)
        fresh = self.start_smtp_sink(name="smtp-sink-2")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, fresh.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual(doc["result"], "matched")
        message = [s for s in doc["steps"] if s["stage"] == "data_end"][0]
        self.assertEqual((message["status"], message["recorded"], message["live"]), ("skipped", None, None))
        self.assertEqual(self.dumps_after_sessions_ended(fresh, 1), [])
        self.assertEqual(fresh.messages_counted(), 0)

    def test_a_blackholed_message_is_replayed_as_the_destination_got_it_rset_and_no_data(self):
        """A replay trial with real Postfix: a blackhole fault answered the message itself, and the
        destination got the relay's RSET where the client sent DATA, never the message, then QUIT.
        The replay sent DATA, which that destination never got, and closed inside the message. Now
        a live server gets the commands the recorded one got, and the replay compares its replies
        with that destination's: its 250 to RSET, its 221 to QUIT."""
        recorded_at = ScriptedAnswers()
        self.addCleanup(recorded_at.stop)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, recorded_at.port), scenarios=["blackhole.toml"])[0]
        (destination,) = recorded_at.wait_for_connections(1)
        self.assertTrue(destination.closed.wait(10))
        self.assertEqual(destination.messages, [])
        got = [bytes(c) for c in destination.commands]
        self.assertEqual([c.split(b" ")[0] for c in got], [b"EHLO", b"MAIL", b"RCPT", b"RSET", b"QUIT"])

        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual(doc["result"], "matched", r.stdout)
        (conn,) = live.wait_for_connections(1)
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual([bytes(c) for c in conn.commands], got)   # no DATA
        self.assertEqual(conn.messages, [])
        steps = {s["stage"]: s for s in doc["steps"]}
        self.assertEqual((steps["data"]["status"], steps["data"]["live"]["code"]), ("matched", 250))
        self.assertEqual(steps["data_end"]["status"], "skipped")
        self.assertEqual((steps["quit"]["status"], steps["quit"]["live"]["code"]), ("matched", 221))

    def test_a_directory_is_replayed_oldest_first_whatever_its_file_names(self):
        """A replay trial: a directory went in file-name order, while the help says oldest first.
        Copies named against their order (b-first.jsonl holds the older session) replay by the
        start time their headers hold."""
        recorded_at = ScriptedAnswers()
        self.addCleanup(recorded_at.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, recorded_at.port), env=self.env)
        for sender in ("first@order.test", "second@order.test"):
            self.swaks(m.port, "--to", TO, "--from", sender)
        caps = m.wait_captures(2)
        m.stop()
        d = os.path.join(self.workdir, "copies")
        os.makedirs(d)
        names = {}
        for cap, name in zip(caps, ("b-first.jsonl", "a-second.jsonl")):
            with open(cap.path, "rb") as src, open(os.path.join(d, name), "wb") as dst:
                dst.write(src.read())
            names[name] = cap.header["started_at"]
        self.assertLess(names["b-first.jsonl"], names["a-second.jsonl"])
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(d, "--to", "%s:%d" % (LOOPBACK, live.port), "-j", "1")
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        listed = [line.split()[0] for line in out.split("\n\n")[0].splitlines()]
        self.assertEqual([os.path.basename(p) for p in listed], ["b-first.jsonl", "a-second.jsonl"], out)
        conns = live.wait_for_connections(2)
        senders = [[bytes(c) for c in conn.commands if c.upper().startswith(b"MAIL")] for conn in conns]
        self.assertEqual(senders, [[b"MAIL FROM:<first@order.test>"], [b"MAIL FROM:<second@order.test>"]])

    def test_a_smuggling_attempt_the_relay_refused_is_not_delivered_by_the_replay(self):
        """A tester's trial (bare_eol strict): a body with a bare-LF end of data and a MAIL FROM
        behind it was refused by the relay (550 5.6.0, the upstream closed without the end of
        data, nothing delivered); `replay client` then sent the body as recorded to smtp-sink,
        which took "\n.\n" for the end (250, a message counted) and the smuggled MAIL FROM for a
        command, and the report said DIVERGED data_end 550 -> 250. The replay now sends only
        what the relay forwarded and closes without ending the message."""
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        c = self.greeted_client(m.port, "raw.test")
        self.assertReply(c.command("MAIL FROM:<a@raw.test>"), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
        self.assertReply(c.reply(), 550, "5.6.0")
        cap = m.wait_captures(1)[0]
        self.assertEqual(sink.messages_counted(), 0)
        # A lax server (smtp-sink reads a bare LF as a line's end, as Postfix did before 3.9)
        # and one that records every byte it gets.
        fresh = self.start_smtp_sink(name="smtp-sink-2")
        ehlo = [r for r in cap.records if r.get("type") == "reply" and r["leg"] == "upstream" and r["code"] == 250][0]
        recorder = ScriptedAnswers({b"EHLO": b"".join(b"250%s%s\r\n" % (b"-" if i + 1 < len(ehlo["lines"]) else b" ",
                                                                          line.encode())
                                                      for i, line in enumerate(ehlo["lines"]))})
        self.addCleanup(recorder.stop)
        for target in (fresh.port, recorder.port):
            r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, target), "--json")
            self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
            doc = json.loads(r.stdout)
            self.assertEqual(doc["result"], "matched", r.stdout)
            message = [s for s in doc["steps"] if s["stage"] == "data_end"][0]
            self.assertEqual((message["status"], message["recorded"]["code"], message["live"]),
                             ("skipped", 550, None), r.stdout)
            self.assertEqual(doc["counts"]["skipped"], 1)
        self.assertEqual(self.dumps_after_sessions_ended(fresh, 1), [])
        self.assertEqual(fresh.messages_counted(), 0)
        conn = recorder.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual(conn.messages, [])
        self.assertTrue(conn.raw.endswith(b"DATA\r\nSubject: x\r\n\r\nbody"), conn.raw)
        self.assertNotIn(b"evil", conn.raw)

    def test_a_client_that_left_inside_its_message_is_replayed_up_to_where_it_left(self):
        """A trial: a client that closed inside its message was replayed without the bytes it
        had sent (the server heard DATA and nothing more), and the run said "matched"."""
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        for line, code in (("EHLO c.test", 250), ("MAIL FROM:<a@example.test>", 250), ("RCPT TO:<%s>" % TO, 250),
                           ("DATA", 354)):
            self.assertReply(c.command(line), code)
        c.send(b"Subject: cut\r\n\r\npartial body\r\nmore")
        time.sleep(0.2)
        c.sock.close()
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "client_closed")
        # The replay's target records what it hears: a second relay, in front of smtp-sink.
        seen = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env, name="seen")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, seen.port), "--json")
        doc = json.loads(r.stdout)
        # (The second relay masks smtp-sink's XCLIENT in its EHLO reply: that step diverges.)
        self.assertEqual([s["status"] for s in doc["steps"][2:]], ["matched"] * 3 + ["sent"], r.stdout)
        self.assertEqual(doc["counts"]["sent"], 1)
        heard = seen.wait_captures(1)[0]
        self.assertTrue(heard.bytes_of("client", "in").endswith(b"DATA\r\nSubject: cut\r\n\r\npartial body\r\nmore"),
                        heard.bytes_of("client", "in"))

    def test_a_line_the_relay_refused_for_a_bare_lf_is_not_replayed(self):
        """A newcomer's trial: a command line with a bare LF inside, which the relay refused
        (500 5.5.2) and never forwarded, went to the live Postfix, which read it as two commands
        and went on to deliver a message the recording never delivered."""
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        c = self.connect(m.port)
        self.assertReply(c.reply(), 220)
        self.assertReply(c.command("EHLO c.test"), 250)
        c.send(b"MAIL FROM:<a@example.test>\nRCPT TO:<%s>\r\n" % TO.encode())
        self.assertReply(c.reply(), 500, "5.5.2")
        self.assertReply(c.command("QUIT"), 221)
        cap = m.wait_captures(1)[0]
        # The replay's target records what it hears: a second relay, in front of smtp-sink.
        seen = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env, name="seen")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, seen.port), "--json")
        doc = json.loads(r.stdout)
        refused = [s for s in doc["steps"] if s["step"] is not None and "MAIL" in s["text"]]
        self.assertEqual([s["status"] for s in refused], ["skipped"], r.stdout)
        self.assertIn("bare LF", refused[0]["note"])
        self.assertEqual(doc["steps"][-1]["live"]["code"], 221, r.stdout)
        heard = seen.wait_captures(1)[0]
        self.assertNotIn(b"MAIL", heard.bytes_of("client", "in"))

    def test_a_message_the_relay_normalized_is_delivered_by_the_replay_to_a_server_that_refuses_bare_lf(self):
        """Under --bare-line-endings normalize the relay forwarded a client's bare-LF message
        with each bare LF a space; the replay sent the client's bytes, so a server that refuses
        bare LF (Postfix with smtpd_forbid_bare_newline) read other bytes than the recorded
        destination (once, under the older normalize, it never saw the end of data and the
        replay reported no_reply). It sends the message as the recorded destination received it."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port),
                               args=["--bare-line-endings", "normalize"], env=self.env)
        c = self.greeted_client(m.port, "c.test")
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("RCPT TO:<%s>" % TO), 250)
        self.assertReply(c.command("DATA"), 354)
        c.send(b"Subject: x\r\n\r\nbody\n..dot\n.\n\r\n.\r\n")
        self.assertReply(c.reply(), 250)
        self.assertReply(c.command("QUIT"), 221)
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.header["bare_eol"], "normalize")
        self.assertEqual(cap.header["normalize_to"], "space")
        self.assertEqual(upstream.wait_for_connections(1)[0].wire_messages, [b"Subject: x\r\n\r\nbody ..dot . \r\n"])
        # A live server that ends data only at CRLF.CRLF; it hangs up after 20 s, so that the
        # replay ends sooner than its 120 s reply timeout where the end of data never comes.
        strict = ScriptedAnswers(lifetime=scaled(20))
        self.addCleanup(strict.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, strict.port), "--json")
        doc = json.loads(r.stdout)
        message = [s for s in doc["steps"] if s["stage"] == "data_end"][0]
        self.assertEqual((message["status"], (message["live"] or {}).get("code")), ("matched", 250), r.stdout)
        self.assertIn("as the relay forwarded it", message["note"])
        self.assertEqual(doc["counts"].get("no_reply", 0), 0, r.stdout)
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)
        conn = strict.wait_for_connections(1)[0]
        self.assertEqual(conn.wire_messages, [b"Subject: x\r\n\r\nbody ..dot . \r\n"])
        self.assertEqual(conn.commands[-1], b"QUIT")

    def test_nothing_the_client_pipelined_behind_the_line_the_relay_closed_on_is_replayed(self):
        """The 20th command the relay refused (19 XCLIENT lines, then a line past the 2048 bytes
        it takes) reached its error limit: 421 4.7.0 in that line's place, the session closed,
        and the MAIL, RCPT and DATA the client had pipelined behind it never read nor forwarded.
        The replay stopped only after lines it does not send itself, so it sent them."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"XCLIENT ADDR=10.0.0.1\r\n" * 19 + b"NOOP " + b"x" * 2100 + b"\r\n" +
               b"MAIL FROM:<a@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % TO.encode())
        for _ in range(19):
            self.assertReply(c.reply(), 500, "5.5.1")
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "protocol_error")
        self.assertNotIn(b"MAIL", b"".join(upstream.wait_for_connections(1)[0].commands))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        behind = [s for s in doc["steps"] if s["stage"] in ("mail", "rcpt", "data")]
        self.assertEqual([s["status"] for s in behind], ["skipped"] * 3, r.stdout)
        self.assertIn("421", behind[0]["note"])
        self.assertIn("never read", behind[0]["note"])
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertNotIn(b"MAIL", conn.raw)
        self.assertNotIn(b"XCLIENT", conn.raw)
        # Nor the long line the relay answered 421 in place of: it never forwarded it either.
        noop = [s for s in doc["steps"] if s["text"].startswith("NOOP")][0]
        self.assertEqual((noop["status"], noop["recorded"]["code"], noop["live"]), ("skipped", 421, None))
        self.assertNotIn(b"NOOP", conn.raw)
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)

    def test_a_command_line_longer_than_the_relay_takes_is_not_replayed(self):
        """A line past the 2048 bytes the relay takes (protocol/limits.hpp) is answered 500 5.5.2
        by the relay and never forwarded; the replay sent it to the live server (Postfix would
        take its first 2048 bytes for a command)."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        self.assertReply(c.command("NOOP " + "x" * 2100), 500, "5.5.2")
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        self.assertReply(c.command("QUIT"), 221)
        cap = m.wait_captures(1)[0]
        self.assertNotIn(b"NOOP", cap.bytes_of("upstream", "out"))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        noop = [s for s in doc["steps"] if s["text"].startswith("NOOP")][0]
        self.assertEqual((noop["status"], noop["live"]), ("skipped", None), r.stdout)
        self.assertIn("2048", noop["note"])
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertNotIn(b"NOOP", conn.raw)
        self.assertIn(b"MAIL FROM:<a@example.test>", conn.raw)

    def test_an_http_request_the_relay_answered_itself_is_not_replayed(self):
        """The relay answers an HTTP request line 221 2.7.0 and closes, forwarding nothing of
        it; the replay sent the request line to the live server."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"GET / HTTP/1.1\r\nHost: mx.test\r\n\r\n")
        self.assertReply(c.reply(), 221, "2.7.0")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "http_command")
        self.assertNotIn(b"GET", cap.bytes_of("upstream", "out"))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        request = [s for s in doc["steps"] if s["step"] is not None]
        self.assertEqual([s["status"] for s in request[1:]], ["skipped"] * (len(request) - 1), r.stdout)
        self.assertIn("HTTP", request[1]["note"])
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertNotIn(b"GET", conn.raw)
        self.assertNotIn(b"Host", conn.raw)

    def test_commands_the_relay_forwarded_before_it_lost_the_upstream_are_replayed_and_nothing_after(self):
        """The upstream hung up on a pipelined MAIL after the relay had forwarded the RCPT and
        DATA behind it: the relay answered MAIL 421 4.4.2 and closed. The replay sent only MAIL
        (a review's finding; an earlier fix had changed only the notes on RCPT and DATA): the live
        server never got what the recorded destination got. Now it gets MAIL, RCPT and DATA (no
        reply to those two is recorded: sent, compared with nothing), and the replay closes once
        MAIL's reply is in, as the recorded upstream was lost there: no message goes."""
        def hang_up_once_the_group_is_in(conn, line):
            time.sleep(scaled(0.5))
            return ScriptedAnswers.CLOSE
        upstream = ScriptedAnswers(answers={b"MAIL": hang_up_once_the_group_is_in})
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % TO.encode())
        self.assertReply(c.reply(), 421, "4.4.2")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "upstream_closed")
        self.assertIn(b"RCPT TO:<%s>\r\nDATA\r\n" % TO.encode(), cap.bytes_of("upstream", "out"))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        behind = [s for s in doc["steps"] if s["stage"] in ("rcpt", "data")]
        self.assertEqual([(s["status"], s["live"]) for s in behind], [("sent", None)] * 2, r.stdout)
        for s in behind:
            self.assertIn("421", s["note"])
            self.assertIn("sent it on", s["note"])
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual(conn.commands[1:], [b"MAIL FROM:<a@example.test>", b"RCPT TO:<%s>" % TO.encode(), b"DATA"])
        self.assertEqual(conn.messages, [])
        # MAIL's recorded reply was the relay's own 421, which the live server does not say.
        mail = [s for s in doc["steps"] if s["stage"] == "mail"][0]
        self.assertEqual((mail["status"], mail["recorded"]["code"], mail["live"]["code"]), ("diverged", 421, 250))
        self.assertEqual(r.returncode, 1, r.stdout)

    def test_a_last_bdat_chunk_the_relay_forwarded_before_it_lost_the_upstream_is_not_replayed(self):
        """The upstream hung up while a pipelined MAIL, RCPT and BDAT 5 LAST with its payload were
        in, all forwarded; the relay answered MAIL 421 4.4.2 (the transaction unknown: the last
        chunk went whole, so the destination may have delivered it). The
        replay sent the RCPT and the whole last chunk, as the relay had sent them on, and with no
        354 to wait for the live server got a whole message and delivered it (a review's finding),
        where the recorded destination answered nothing. The live server
        now gets MAIL and RCPT, nothing of the BDAT, and the replay closes."""
        chunking = b"250-scripted.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n"

        def hang_up_once_the_group_is_in(conn, line):
            time.sleep(scaled(0.5))
            return ScriptedAnswers.CLOSE
        upstream = ScriptedAnswers(answers={b"EHLO": chunking, b"MAIL": hang_up_once_the_group_is_in})
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<%s>\r\nBDAT 5 LAST\r\nhello" % TO.encode())
        self.assertReply(c.reply(), 421, "4.4.2")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "upstream_closed")
        self.assertIn(b"RCPT TO:<%s>\r\nBDAT 5 LAST\r\nhello" % TO.encode(), cap.bytes_of("upstream", "out"))
        self.assertEqual([t["outcome"] for t in cap.of_type("transaction")], ["unknown"])
        live = ScriptedAnswers(answers={b"EHLO": chunking})
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertNotIn(b"BDAT", conn.raw)
        self.assertNotIn(b"hello", conn.raw)
        self.assertEqual(conn.commands[1:], [b"MAIL FROM:<a@example.test>", b"RCPT TO:<%s>" % TO.encode()])
        doc = json.loads(r.stdout)
        self.assertEqual([(s["stage"], s["status"], s["live"]) for s in doc["steps"] if s["stage"] in ("rcpt", "bdat")],
                         [("rcpt", "sent", None), ("bdat", "skipped", None)], r.stdout)
        # MAIL's recorded reply was the relay's own 421, which the live server does not say.
        self.assertEqual(r.returncode, 1, r.stdout)

    def test_a_line_the_relay_never_read_is_not_replayed_for_an_earlier_copy_of_it(self):
        """19 XCLIENT lines refused 500, then in one write a RCPT, the 20th refusal and the same
        RCPT again: the relay forwarded the first RCPT, answered the XCLIENT 421 4.7.0 and closed,
        never reading the second; the recorded destination got RCPT once. The replay took the
        first RCPT's copy for the second's and sent it too (a review's finding)."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        self.assertReply(c.command("MAIL FROM:<a@example.test>"), 250)
        for i in range(19):
            self.assertReply(c.command("XCLIENT NAME=x%d" % i), 500)
        rcpt = b"RCPT TO:<%s>\r\n" % TO.encode()
        c.send(rcpt + b"XCLIENT NAME=last\r\n" + rcpt)
        self.assertReply(c.reply(), 250)
        self.assertReply(c.reply(), 421, "4.7.0")
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "protocol_error")
        self.assertEqual(cap.bytes_of("upstream", "out").count(rcpt), 1)
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual([l for l in conn.commands if l.startswith(b"RCPT")], [rcpt[:-2]])
        self.assertNotIn(b"XCLIENT", conn.raw)
        doc = json.loads(r.stdout)
        last = doc["steps"][-1]
        self.assertEqual((last["stage"], last["status"], last["live"]), ("rcpt", "skipped", None))
        self.assertEqual(r.returncode, 0, r.stdout)

    def test_an_unfinished_line_with_a_bare_lf_is_not_replayed(self):
        """A client closed inside a command line holding a bare LF. The relay never forwarded it
        (only CRLF ends a line, and it refuses a bare LF in one whatever follows); the replay
        sent it as recorded, and a server that takes a bare LF for a line's end (Postfix) reads
        the MAIL FROM before it as a command."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"MAIL FROM:<a@example.test>\nRCPT TO:<%s>" % TO.encode())
        time.sleep(0.2)
        c.sock.close()
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "client_closed")
        self.assertNotIn(b"MAIL", cap.bytes_of("upstream", "out"))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        last = doc["steps"][-1]
        self.assertEqual((last["status"], last["live"]), ("skipped", None), r.stdout)
        self.assertIn("bare LF", last["note"])
        self.assertEqual((r.returncode, doc["result"]), (0, "matched"), r.stdout)
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertNotIn(b"MAIL", conn.raw)
        self.assertIn(b"EHLO c.test\r\n", conn.raw)

    def test_nothing_of_a_session_a_faults_greeting_refused_is_replayed(self):
        """reverse-dns-block.toml: a 554 greeting made by a fault rule, then 503 to every command
        and 221 to QUIT, all the relay's own; nothing went upstream. The replay sent every line
        to the live server, which greeted 220 and went on (a message would have been
        delivered). Nothing is sent now; each step is skipped and says why."""
        upstream = ScriptedAnswers()
        self.addCleanup(upstream.stop)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, upstream.port), env=self.env,
                               args=["--scenario", os.path.join(SCENARIOS_DIR, "reverse-dns-block.toml")])
        c = self.connect(m.port)
        self.assertReply(c.reply(), 554, "5.7.1")
        for line in ("EHLO c.test", "MAIL FROM:<a@example.test>", "RCPT TO:<%s>" % TO, "DATA"):
            self.assertReply(c.command(line), 503)
        self.assertReply(c.command("QUIT"), 221)
        cap = m.wait_captures(1)[0]
        self.assertNotIn(b"MAIL", cap.bytes_of("upstream", "out"))
        live = ScriptedAnswers()
        self.addCleanup(live.stop)
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, live.port), "--json")
        doc = json.loads(r.stdout)
        steps = [s for s in doc["steps"] if s["step"] is not None]
        self.assertEqual([(s["status"], s["live"]) for s in steps], [("skipped", None)] * 5, r.stdout)
        for s in steps:
            self.assertIn("reverse-dns-block", s["note"])
        conn = live.wait_for_connections(1)[0]
        self.assertTrue(conn.closed.wait(10))
        self.assertEqual((conn.raw, conn.commands), (b"", []))
        # The greeting the recorded client heard was the rule's, which the live server does not say.
        greeting = doc["steps"][0]
        self.assertEqual((greeting["status"], greeting["recorded"]["source"], greeting["live"]["code"]),
                         ("diverged", "injected", 220))
        self.assertEqual(r.returncode, 1, r.stdout)

    def test_nothing_the_client_pipelined_after_quit_is_replayed(self):
        """The relay reads nothing after QUIT (it records the bytes, relays none); the replay sent
        the MAIL and RCPT the client had pipelined behind its QUIT."""
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        c = self.greeted_client(m.port, "c.test")
        c.send(b"QUIT\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<%s>\r\n" % TO.encode())
        self.assertReply(c.reply(), 221)
        self.assertEqual(c.read_to_eof(), b"")
        cap = m.wait_captures(1)[0]
        self.assertEqual(cap.end["reason"], "client_quit")
        self.assertIn(b"QUIT\r\nMAIL", cap.bytes_of("client", "in"))
        self.assertNotIn(b"MAIL", cap.bytes_of("upstream", "out"))
        # The replay's target records what it hears: a second relay, in front of smtp-sink.
        seen = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env, name="seen")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, seen.port), "--json")
        doc = json.loads(r.stdout)
        behind = [s for s in doc["steps"] if s["stage"] in ("mail", "rcpt")]
        self.assertEqual([(s["status"], s["live"]) for s in behind], [("skipped", None)] * 2, r.stdout)
        for s in behind:
            self.assertIn("after QUIT", s["note"])
        quit = [s for s in doc["steps"] if s["stage"] == "quit"][0]
        self.assertEqual((quit["status"], quit["live"]["code"]), ("matched", 221), r.stdout)
        heard = seen.wait_captures(1)[0]
        self.assertTrue(heard.bytes_of("client", "in").endswith(b"QUIT\r\n"), heard.bytes_of("client", "in"))
        self.assertNotIn(b"MAIL", heard.bytes_of("client", "in"))

    def test_replay_against_a_rejecting_sink_names_the_rcpt_reply(self):
        sink = self.start_smtp_sink(dump=False)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port))[0]
        rejecting = self.start_smtp_sink(args=["-r", "rcpt"], dump=False, name="smtp-sink-r")
        target = "%s:%d" % (LOOPBACK, rejecting.port)
        r = replay_client(cap.path, "--to", target, "--json")
        self.assertEqual(r.returncode, 1, r.stderr.decode())
        doc = json.loads(r.stdout)
        rcpt = [s for s in doc["steps"] if s["stage"] == "rcpt"][0]
        self.assertEqual(rcpt["status"], "diverged")
        self.assertEqual((rcpt["recorded"]["code"], rcpt["live"]["code"] // 100), (250, 4))
        # The message is not sent once DATA is refused.
        self.assertEqual([s["status"] for s in doc["steps"] if s["stage"] == "data_end"], ["not_sent"])
        text = replay_client(cap.path, "--to", target).stdout.decode()
        diverged = [l for l in text.splitlines() if l.startswith("! ")]
        self.assertTrue(diverged[0].startswith("! RCPT TO:<%s>" % TO) or any(
            l.startswith("! RCPT TO:<%s>" % TO) for l in diverged), text)

    def test_a_directory_of_200_captures_replays_concurrently_with_junit(self):
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        subprocess.run([SMTP_SOURCE, "-s", "20", "-m", "200", "-t", TO, "%s:%d" % (LOOPBACK, m.port)],
                       check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        caps = m.wait_captures(200, timeout=60)
        m.stop()
        self.assertEqual(len(caps), 200)
        junit = os.path.join(self.workdir, "replay.xml")
        fresh = self.start_smtp_sink(dump=False, name="smtp-sink-2")
        started = time.monotonic()
        r = replay_client(m.captures, "--to", "%s:%d" % (LOOPBACK, fresh.port), "-j", "20", "--junit", junit,
                          "--json", timeout=120)
        elapsed = time.monotonic() - started
        self.assertEqual(r.returncode, 0, r.stdout.decode()[-3000:] + r.stderr.decode())
        self.assertLess(elapsed, 60, "200 captures, 20 at a time, in bounded time")
        lines = r.stdout.decode().splitlines()
        self.assertEqual(json.loads(lines[-1])["summary"],
                         {"matched": 200, "diverged": 0, "unreachable": 0, "unreadable": 0, "by_divergence": {}})
        suite = ET.parse(junit).getroot().find("testsuite")
        self.assertEqual((suite.get("tests"), suite.get("failures"), suite.get("errors")), ("200", "0", "0"))
        self.assertEqual(len(suite.findall("testcase")), 200)
        wait_until(lambda: fresh.messages_counted() >= 200, 20, "200 replayed messages at smtp-sink")

    def test_diverged_captures_are_failures_in_junit_and_the_summary(self):
        sink = self.start_smtp_sink(dump=False)
        caps = self.record(upstream="%s:%d" % (LOOPBACK, sink.port), count=3)
        rejecting = self.start_smtp_sink(args=["-r", "rcpt"], dump=False, name="smtp-sink-r")
        junit = os.path.join(self.workdir, "replay.xml")
        d = os.path.dirname(caps[0].path)
        r = replay_client(d, "--to", "%s:%d" % (LOOPBACK, rejecting.port), "-j", "3", "--junit", junit, "--json")
        self.assertEqual(r.returncode, 1, r.stderr.decode())
        summary = json.loads(r.stdout.decode().splitlines()[-1])["summary"]
        self.assertEqual((summary["matched"], summary["diverged"]), (0, 3))
        # Each divergence by stage and code, counted once per capture that has it.
        rcpt = [k for k in summary["by_divergence"] if k.startswith("rcpt 250 -> 4")]
        self.assertEqual([summary["by_divergence"][k] for k in rcpt], [3], summary)
        self.assertEqual(summary["by_divergence"]["data_end 250 -> not_sent"], 3, summary)
        suite = ET.parse(junit).getroot().find("testsuite")
        self.assertEqual((suite.get("tests"), suite.get("failures")), ("3", "3"))
        self.assertEqual(len(suite.findall("testcase/failure")), 3)

    def test_an_injected_recorded_reply_is_shown_as_injected(self):
        sink = self.start_smtp_sink(dump=False)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port), scenarios=["mailbox-full.toml"])[0]
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, sink.port), "--json")
        self.assertEqual(r.returncode, 1)
        doc = json.loads(r.stdout)
        rcpt = [s for s in doc["steps"] if s["stage"] == "rcpt"][0]
        self.assertEqual((rcpt["recorded"]["source"], rcpt["recorded"]["rule"], rcpt["recorded"]["code"]),
                         ("injected", "mailbox-full", 552))
        self.assertEqual(rcpt["live"]["code"], 250)
        self.assertIn("injected", rcpt["differences"][0])
        self.assertEqual([f["rule"] for f in doc["faults"]], ["mailbox-full"])

    def test_a_malformed_capture_is_one_line_and_exit_2(self):
        bad = self.write_file("bad.jsonl", b'{"type":"header"}\nnot json\n')
        r = replay_client(bad, "--to", "127.0.0.1:9")
        self.assertEqual(r.returncode, 2)
        err = r.stderr.decode().strip().splitlines()
        self.assertEqual(len(err), 1, err)
        self.assertIn("bad.jsonl", err[0])

    def test_usage_errors_are_one_line_and_exit_2(self):
        cap = self.record()[0]
        cases = [
            (["replay", "client", cap.path, "--to", "127.0.0.1:9", "--timing", "slow"], "--timing"),
            (["replay", "client", cap.path, "--to", "127.0.0.1:9", "-j", "0"], "-j"),
            (["replay", "client", cap.path, "--to", "127.0.0.1:9", "--auth-user", "u"], "--auth-password"),
            (["replay", "server", os.path.dirname(cap.path), "--listen", "127.0.0.1:0"], "one"),
            (["replay", "server", cap.path, "--listen", "127.0.0.1:0", "--timing", "x0"], "--timing"),
            (["replay", "server", cap.path, "--listen", "127.0.0.1:0", "--client-idle", "0"], "--client-idle"),
        ]
        for argv, named in cases:
            r = run_mailtap(argv)
            err = r.stderr.decode().strip().splitlines()
            self.assertEqual((r.returncode, len(err)), (2, 1), (argv, err))
            self.assertIn(named, err[0])
        for sub in ("server", "client"):
            self.assertEqual(run_mailtap(["replay", sub, "--help"]).returncode, 0)

    def test_an_unreachable_server_is_an_error_in_junit(self):
        cap = self.record()[0]
        junit = os.path.join(self.workdir, "replay.xml")
        r = replay_client(cap.path, "--to", "127.0.0.1:%d" % free_port(), "--junit", junit, "--json")
        self.assertEqual(r.returncode, 1, r.stderr.decode())
        self.assertIn("cannot connect", json.loads(r.stdout)["error"])
        # --help says what exit 1 covers (a newcomer's trial: it named a divergence only).
        self.assertIn("1 a replay diverged or the server could not be reached",
                      run_mailtap(["replay", "client", "--help"]).stdout.decode())
        suite = ET.parse(junit).getroot().find("testsuite")
        self.assertEqual((suite.get("tests"), suite.get("failures"), suite.get("errors")), ("1", "0", "1"))

    def test_an_unreachable_server_is_no_divergence_in_the_summary(self):
        # A fourth trial: a closed port read "6 diverged" with a table of invented divergences.
        caps = self.record(count=2)
        d = os.path.dirname(caps[0].path)
        port = free_port()
        r = replay_client(d, "--to", "127.0.0.1:%d" % port)
        self.assertEqual(r.returncode, 1, r.stderr.decode())
        out = r.stdout.decode()
        self.assertEqual(out.count("  UNREACHABLE cannot connect"), 2, out)
        self.assertIn("replayed 2 capture(s): 0 matched, 0 diverged, 2 unreachable, 0 unreadable\n", out)
        self.assertNotIn("not_sent", out)
        r = replay_client(d, "--to", "127.0.0.1:%d" % port, "--json")
        lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
        self.assertEqual([l["result"] for l in lines[:2]], ["unreachable", "unreachable"])
        self.assertEqual(lines[2]["summary"], {"matched": 0, "diverged": 0, "unreachable": 2, "unreadable": 0,
                                               "by_divergence": {}})

    def test_an_unwritable_junit_path_stops_the_run_before_any_mail(self):
        # A fourth trial: the messages were delivered, and only then "--junit: cannot write".
        sink = self.start_smtp_sink(dump=False)
        cap = self.record(upstream="%s:%d" % (LOOPBACK, sink.port))[0]
        wait_until(lambda: sink.messages_counted() >= 1, 20, "the recorded message at smtp-sink")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, sink.port), "--junit", self.workdir)
        err = r.stderr.decode().strip().splitlines()
        self.assertEqual((r.returncode, len(err)), (2, 1), err)
        self.assertIn("--junit %s: cannot write the file" % self.workdir, err[0])
        self.assertEqual(r.stdout, b"")
        time.sleep(0.5)
        self.assertEqual(sink.messages_counted(), 1)

    def test_pipelined_bdat_chunks_are_replayed_byte_for_byte(self):
        m = self.start_mailtap(env=self.env)   # the built-in sink offers CHUNKING and PIPELINING
        c = self.greeted_client(m.port, ehlo="bdat.test")
        c.send("MAIL FROM:<a@x.test>\r\nRCPT TO:<%s>\r\nBDAT 6\r\nhello\nBDAT 7 LAST\r\n.world\r" % TO)
        self.assertEqual([r.code for r in c.replies(4)], [250, 250, 250, 250])
        self.quit(c)
        cap = m.wait_captures(1)[0]
        m.stop()
        server = self.replay_server(cap.path, "--timing", "fast", "--json")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, server.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        steps = json.loads(r.stdout)["steps"]
        self.assertEqual([s["stage"] for s in steps], ["banner", "ehlo", "mail", "rcpt", "bdat", "bdat", "quit"])
        code, out = server.finish()
        self.assertEqual(code, 0, out)   # every byte as recorded, the bare LF and CR of the chunks included
        self.assertEqual(json.loads(out)["divergences"], [])

    def test_starttls_is_replayed(self):
        cap = self.record(["-tls"])[0]   # the built-in sink offers STARTTLS with the relay's certificate
        server = self.replay_server(cap.path, "--timing", "fast")
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, server.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        self.assertEqual([s["text"] for s in doc["steps"]][:4], ["(greeting)", "EHLO swaks.test", "STARTTLS",
                                                               "EHLO swaks.test"])
        self.assertEqual({s["status"] for s in doc["steps"]}, {"matched"})
        code, out = server.finish()
        self.assertEqual(code, 0, out)

    def test_auth_is_skipped_without_credentials_and_run_with_them(self):
        cap = self.record(["-a", "PLAIN", "-au", "user", "-ap", "secret"])[0]
        upstream = self.start_auth_server("user", "secret")
        target = "%s:%d" % (LOOPBACK, upstream.port)
        r = replay_client(cap.path, "--to", target, "--json")
        doc = json.loads(r.stdout)
        auth = [s for s in doc["steps"] if s["stage"] == "auth"]
        self.assertEqual([s["status"] for s in auth], ["skipped"])
        # Not replayed, so not matched: counted apart (the steps by status, each once).
        by_status = {k: 0 for k in ("matched", "diverged", "skipped", "not_sent", "no_reply", "sent")}
        for s in doc["steps"]:
            by_status[s["status"]] += 1
        self.assertEqual(doc["counts"], by_status)
        self.assertEqual(doc["counts"]["skipped"], 1)
        r = replay_client(cap.path, "--to", target, "--json", "--auth-user", "user", "--auth-password", "secret")
        doc = json.loads(r.stdout)
        auth = [s for s in doc["steps"] if s["stage"] == "auth"]
        self.assertEqual([(s["status"], s["live"]["code"]) for s in auth], [("matched", 235)])
        self.assertEqual(doc["counts"]["skipped"], 0)
        self.assertEqual(upstream.logins, [("user", "secret")] * 1)
        # Kept out of ps(1): the first line of a file, or the environment (a newcomer's trial).
        secret_file = self.write_file("password", b"secret\n")
        for r in (replay_client(cap.path, "--to", target, "--json", "--auth-user", "user", "--auth-password-file",
                                secret_file),
                  replay_client(cap.path, "--to", target, "--json", "--auth-user", "user",
                                env=dict(os.environ, MAILTAP_AUTH_PASSWORD="secret"))):
            auth = [s for s in json.loads(r.stdout)["steps"] if s["stage"] == "auth"]
            self.assertEqual([(s["status"], s["live"]["code"]) for s in auth], [("matched", 235)])
        self.assertEqual(upstream.logins, [("user", "secret")] * 3)
        r = replay_client(cap.path, "--to", target, "--auth-user", "user", "--auth-password", "x",
                          "--auth-password-file", secret_file)
        self.assertEqual((r.returncode, len(r.stderr.splitlines())), (2, 1), r)

    def test_starttls_is_compared_with_the_destinations_reply(self):
        # aiosmtpd answers STARTTLS "220 Ready to start TLS", without an enhanced code; the
        # client heard the relay's own "220 2.0.0" once the relay had secured the upstream leg.
        up = self.start_starttls_server()
        cap = self.record(["-tls"], upstream="%s:%d" % (LOOPBACK, up.port), relay_args=["--upstream-ca", up.cert])[0]
        starttls = [r for r in cap.of_type("reply") if r["code"] == 220 and r["lines"][0].endswith("TLS")]
        self.assertEqual([(r["leg"], r["enhanced"]) for r in starttls], [("upstream", ""), ("client", "2.0.0")])
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, up.port), "--json")
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        step = [s for s in doc["steps"] if s["text"] == "STARTTLS"][0]
        self.assertEqual((step["status"], step["differences"]), ("matched", []))
        self.assertEqual((step["recorded"]["source"], step["recorded"]["enhanced"]), ("relay", "2.0.0"))
        self.assertEqual((step["recorded"]["server_reply"]["code"], step["recorded"]["server_reply"]["enhanced"]),
                         (220, ""))
        self.assertEqual((step["live"]["code"], step["live"]["enhanced"]), (220, ""))
        self.assertEqual({s["status"] for s in doc["steps"]}, {"matched"})

    def test_a_live_220_to_a_recorded_454_starts_tls(self):
        # Recorded: the destination refused STARTTLS (454) and swaks went on in plaintext.
        refusing = ScriptedAnswers({
            b"EHLO": b"250-scripted.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            b"STARTTLS": b"454 4.7.0 TLS not available\r\n"})
        self.addCleanup(refusing.stop)
        cap = self.record(["--tls-optional"], upstream="%s:%d" % (LOOPBACK, refusing.port))[0]
        self.assertIn(b"454 4.7.0", cap.bytes_of("client", "out"))
        # Live: a server that answers 220 and does the handshake.
        up = self.start_starttls_server()
        r = replay_client(cap.path, "--to", "%s:%d" % (LOOPBACK, up.port), "--json")
        self.assertEqual(r.returncode, 1, r.stdout.decode() + r.stderr.decode())
        doc = json.loads(r.stdout)
        starttls = [s for s in doc["steps"] if s["text"] == "STARTTLS"][0]
        self.assertEqual((starttls["status"], starttls["recorded"]["code"], starttls["live"]["code"]),
                         ("diverged", 454, 220))
        # The rest went on inside TLS: every step sent was answered, down to QUIT (the server
        # never saw plaintext in its handshake; swaks sent no EHLO after its 454, so aiosmtpd
        # refuses MAIL with 503 and the message is not sent).
        after = doc["steps"][doc["steps"].index(starttls) + 1:]
        self.assertEqual([s["status"] for s in after if s["status"] == "no_reply"], [], r.stdout.decode())
        self.assertTrue(all(s["live"] for s in after if s["status"] != "not_sent"), r.stdout.decode())
        self.assertEqual((after[-1]["text"], after[-1]["live"]["code"]), ("QUIT", 221))

    def start_starttls_server(self):
        """aiosmtpd offering STARTTLS (a certificate made for the test), no AUTH; `.cert` is
        the certificate for the relay's --upstream-ca."""
        from aiosmtpd.controller import Controller
        from tls_upstream import make_cert, server_context

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 Ok: queued"

        cert, key = make_cert(self.workdir, "starttls-server")
        port = free_port()
        c = Controller(Handler(), hostname=LOOPBACK, port=port, tls_context=server_context(cert, key),
                       ready_timeout=10)
        c.start()
        self.addCleanup(c.stop)
        c.cert = cert
        return c

    def start_auth_server(self, user, password):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        class Server:
            logins = []

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = (auth_data.login.decode(), auth_data.password.decode())
            Server.logins.append(login)
            return AuthResult(success=login == (user, password))

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 Ok: queued"

        Server.port = free_port()
        c = Controller(Handler(), hostname=LOOPBACK, port=Server.port, authenticator=authenticator,
                       auth_require_tls=False, ready_timeout=10)
        c.start()
        self.addCleanup(c.stop)
        return Server


if __name__ == "__main__":
    unittest.main()
