"""Exporting captures for other tools (README "Exporting"; captures/pcap_frames.hpp,
captures/eml_export.hpp).

Real sessions: swaks through mailtap to Postfix's smtp-sink (or the built-in sink for the
STARTTLS one). `mailtap export pcap` is read by tshark, whose SMTP dissector must show the
commands and replies of both legs, the decrypted conversation of a TLS session, with the
recorded times; `mailtap export eml` writes the message Python's email parser reads with the
Subject and Message-ID swaks sent, dot-unstuffed.
"""

import calendar
import collections
import email
import email.policy
import os
import stat
import shutil
import subprocess
import unittest

from harness import IntegrationTest, LOOPBACK, run_mailtap

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
SESSION_COMMANDS = ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]


def tshark_smtp(pcap, *fields):
    """One tuple of `fields` per SMTP frame tshark dissects (tab-separated, as -T fields prints)."""
    argv = [TSHARK, "-r", pcap, "-Y", "smtp", "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        raise AssertionError("tshark exited %d: %s" % (r.returncode, r.stderr.decode()))
    return [tuple(line.split("\t")) for line in r.stdout.decode().splitlines()]


def by_stream(rows):
    """tcp.stream -> (commands in order, reply codes in order)."""
    out = collections.defaultdict(lambda: ([], []))
    for stream, command, code in rows:
        if command:
            out[stream][0].append(command)
        if code:
            out[stream][1].extend(code.split(","))
    return dict(out)


def unix_time(rfc3339):
    seconds, fraction = rfc3339.rstrip("Z").split(".")
    return calendar.timegm(tuple(int(x) for x in seconds.replace("T", "-").replace(":", "-").split("-"))) + \
        int(fraction) / 1e6


class Export(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.env = dict(os.environ, XDG_STATE_HOME=os.path.join(self.workdir, "state"))
        os.makedirs(self.env["XDG_STATE_HOME"])

    def one_session(self, *swaks_args, upstream=None):
        """One swaks session through mailtap; its capture."""
        if upstream is None:
            sink = self.start_smtp_sink(dump=False)
            upstream = "%s:%d" % (LOOPBACK, sink.port)
        m = self.start_mailtap(upstream=upstream, env=self.env)
        code, transcript = self.swaks(m.port, "--from", "alice@example.test", "--to", "bob@example.test",
                                      *swaks_args)
        self.assertEqual(code, 0, transcript)
        return self.single_capture(m)

    def export(self, kind, capture, output):
        r = run_mailtap(["export", kind, capture.path, "-o", output])
        self.assertEqual(r.returncode, 0, r)
        return r

    def test_tshark_shows_the_commands_and_replies_of_both_legs(self):
        cap = self.one_session("--header", "Subject: pcap export")
        pcap = os.path.join(self.workdir, "session.pcap")
        self.export("pcap", cap, pcap)
        streams = by_stream(tshark_smtp(pcap, "tcp.stream", "smtp.req.command", "smtp.response.code"))
        self.assertEqual(len(streams), 2, streams)   # client <-> mailtap, mailtap <-> smtp-sink
        for commands, codes in streams.values():
            self.assertEqual(commands, SESSION_COMMANDS)
            self.assertEqual(codes[0], "220")
            for code in ("250", "354", "221"):
                self.assertIn(code, codes)
        # the recorded times: the first frame at the session's start, none before it
        started = unix_time(cap.header["started_at"])
        times = [float(t) for (t,) in tshark_smtp(pcap, "frame.time_epoch")]
        self.assertGreaterEqual(min(times), started - 1e-6)
        self.assertLess(min(times), started + 5)
        ended = unix_time(cap.end["ended_at"])
        self.assertLessEqual(max(times), ended + 1e-3)

    def test_a_starttls_session_shows_its_decrypted_conversation(self):
        cap = self.one_session("--tls", upstream="builtin")
        self.assertTrue(cap.of_type("tls"), "the session used TLS")
        pcap = os.path.join(self.workdir, "tls.pcap")
        self.export("pcap", cap, pcap)
        rows = tshark_smtp(pcap, "tcp.srcport", "tcp.dstport", "smtp.req.command", "smtp.response.code")
        client_port = int(cap.header["client"].rsplit(":", 1)[1])
        client_commands = [c for (sport, _, c, _) in rows if c and int(sport) in (client_port, client_port + 1)]
        # STARTTLS and its 220 in the first connection; the protected commands after it, decrypted.
        # (Wireshark's smtp.req.command holds a command's first four characters.)
        self.assertEqual(client_commands, ["EHLO", "STAR", "EHLO", "MAIL", "RCPT", "DATA", "QUIT"])
        self.assertEqual(sum(1 for r in rows if r[2] == "MAIL"), 2, rows)   # both legs
        tls = subprocess.run([TSHARK, "-r", pcap, "-Y", "tls"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=60)
        self.assertEqual(tls.stdout, b"", "no frame is read as TLS records")

    def test_eml_is_the_message_as_swaks_sent_it(self):
        body = "first line\n.a line that starts with a dot\nlast line"
        cap = self.one_session("--header", "Subject: eml export check", "--header",
                               "Message-Id: <export-check-1@example.test>", "--body", body)
        out = os.path.join(self.workdir, "eml")
        r = self.export("eml", cap, out)
        paths = r.stdout.decode().split()
        self.assertEqual(paths, [os.path.join(out, cap.header["session"] + "-1.eml")])
        # As private as the capture it came from (0600), whatever the umask (a newcomer's
        # trial: 0644). A pcap of it too, written over an older file of mode 0644.
        self.assertEqual(stat.S_IMODE(os.stat(paths[0]).st_mode), 0o600)
        pcap = os.path.join(self.workdir, "session.pcap")
        with open(pcap, "wb"):
            pass
        os.chmod(pcap, 0o644)
        self.export("pcap", cap, pcap)
        self.assertEqual(stat.S_IMODE(os.stat(pcap).st_mode), 0o600)
        with open(paths[0], "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        self.assertEqual(msg["Subject"], "eml export check")
        self.assertEqual(msg["Message-ID"], "<export-check-1@example.test>")
        self.assertEqual(msg["From"], "alice@example.test")
        self.assertEqual(msg.get_content().replace("\r\n", "\n").strip(), body)
        # the transaction record names the same message
        self.assertEqual(cap.transactions[0]["message_id"], "<export-check-1@example.test>")

    def test_eml_of_a_session_without_a_message_is_a_problem_and_writes_nothing(self):
        # A newcomer's trial: exit 0 and an empty directory read as "exported".
        cap = self.one_session("--quit-after", "RCPT")
        out = os.path.join(self.workdir, "eml-none")
        r = run_mailtap(["export", "eml", cap.path, "-o", out])
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout, b"", r)
        err = r.stderr.decode().splitlines()
        self.assertEqual(len(err), 1, r)
        self.assertIn("no message in this capture", err[0])
        self.assertIn(cap.path, err[0])
        self.assertFalse(os.path.exists(out), "no directory made for nothing")

    def test_bad_names_are_one_line_errors(self):
        for args in (["pcap", os.path.join(self.workdir, "absent.jsonl"), "-o", os.path.join(self.workdir, "x.pcap")],
                     ["eml", os.path.join(self.workdir, "absent.jsonl"), "-o", self.workdir]):
            r = run_mailtap(["export", *args])
            self.assertEqual(r.returncode, 2, r)
            self.assertEqual(len(r.stderr.decode().splitlines()), 1, r)
            self.assertIn("absent.jsonl", r.stderr.decode())

    def test_a_directory_of_several_captures_names_its_oldest_and_newest(self):
        """README 'Command line': a directory stands for its captures oldest first. export takes
        one, and the line refusing several names the oldest and the newest by the start time in
        their headers, whatever their file names (it went in file-name order: copies named
        against their order, b-first.jsonl holding the older session, had a-second.jsonl first)."""
        sink = self.start_smtp_sink(dump=False)
        m = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, sink.port), env=self.env)
        for sender in ("first@order.test", "second@order.test"):
            code, transcript = self.swaks(m.port, "--from", sender, "--to", "bob@example.test")
            self.assertEqual(code, 0, transcript)
        caps = sorted(m.wait_captures(2), key=lambda c: c.header["started_at"])
        m.stop()
        self.assertLess(caps[0].header["started_at"], caps[1].header["started_at"])
        d = os.path.join(self.workdir, "copies")
        os.makedirs(d)
        for cap, name in zip(caps, ("b-first.jsonl", "a-second.jsonl")):
            shutil.copyfile(cap.path, os.path.join(d, name))
        for kind, output in (("pcap", os.path.join(self.workdir, "x.pcap")), ("eml", os.path.join(self.workdir, "eml"))):
            r = run_mailtap(["export", kind, d, "-o", output])
            self.assertEqual((r.returncode, r.stdout), (2, b""), r)
            err = r.stderr.decode().splitlines()
            self.assertEqual(err, ["mailtap export %s: %s: names 2 captures (oldest b-first.jsonl, newest "
                                   "a-second.jsonl); export takes one" % (kind, d)], r)
            self.assertFalse(os.path.exists(output), "nothing written")
        # A directory of one is that capture, exported.
        os.remove(os.path.join(d, "a-second.jsonl"))
        r = run_mailtap(["export", "eml", d, "-o", os.path.join(self.workdir, "eml")])
        self.assertEqual(r.returncode, 0, r)
        written = r.stdout.decode().split()
        self.assertEqual([os.path.basename(p) for p in written], ["%s-1.eml" % caps[0].header["session"]], r)


if __name__ == "__main__":
    unittest.main()
