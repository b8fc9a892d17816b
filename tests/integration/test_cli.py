"""Command line contract (README.md "Command line", captures/FORMAT.md; issue 14 item 18).

Exit codes: 0 success, 2 usage or input error with a one-line message naming the bad input.
"""

import json
import os
import re
import socket
import stat
import subprocess
import time
import unittest

from harness import (LOOPBACK, Capture, IntegrationTest, Mailtap, capture_paths, free_port, mailtap_bin,
                     own_interface_address, run_mailtap, show_json, wait_until)

VALID_CONFIG = """\
# a valid configuration
listen = "127.0.0.1:0"
upstream = "builtin"
max_sessions = 10
relay_name = "mailtap-test"

[data]
bare_line_endings = "normalize"

[timeouts]
client_idle = 60
drain = 5
"""


class CheckConfig(IntegrationTest):

    def check(self, text, name="mailtap.toml"):
        path = self.write_file(name, text.encode("utf-8"))
        return path, run_mailtap(["check-config", path])

    def assertOneLineError(self, r):
        self.assertEqual(r.returncode, 2, r)
        lines = r.stderr.decode("utf-8", "replace").splitlines()
        self.assertEqual(len(lines), 1, "expected one line on stderr, got %r" % lines)
        return lines[0]

    def test_valid_file(self):
        path, r = self.check(VALID_CONFIG)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, b"")

    def test_example_file_shipped_with_the_relay(self):
        example = os.path.join(os.path.dirname(__file__), "..", "..", "relay", "mailtap.example.toml")
        r = run_mailtap(["check-config", os.path.normpath(example)])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_an_admin_address_run_would_refuse(self):
        # A fifth trial: check-config passed what `run` then refused with exit 2.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILTAP_ADMIN_TOKEN")}
        path = self.write_file("open-admin.toml", b'admin = "0.0.0.0:0"\n')
        r = run_mailtap(["check-config", path], env=env)
        line = self.assertOneLineError(r)
        self.assertIn("is not a loopback address and no admin token is set", line)
        # With the token in the environment, as `run` takes it, it passes.
        env["MAILTAP_ADMIN_TOKEN"] = "0123456789abcdef0123456789abcdef"
        r = run_mailtap(["check-config", path], env=env)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_an_upstream_that_is_its_own_listener(self):
        # A newcomer's trial: check-config said ok, and run refused the file with exit 2.
        path, r = self.check('listen = "127.0.0.1:21905"\nupstream = "127.0.0.1:21905"\n')
        line = self.assertOneLineError(r)
        self.assertIn("upstream 127.0.0.1:21905 is mailtap's own SMTP listener (listen)", line)
        path, r = self.check('listen = "127.0.0.1:0"\nupstream = "127.0.0.1:21906"\nadmin = "127.0.0.1:21906"\n')
        self.assertIn("own admin API (admin)", self.assertOneLineError(r))
        path, r = self.check('listen = "127.0.0.1:0"\nupstream = "127.0.0.1:21908"\n[tls]\nlisten = "127.0.0.1:21908"\n')
        self.assertIn("own SMTPS listener ([tls] listen)", self.assertOneLineError(r))   # the key as written
        path, r = self.check('listen = "127.0.0.1:0"\nupstream = "127.0.0.1:21907"\nadmin = "127.0.0.1:21906"\n')
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_unknown_top_level_key(self):
        path, r = self.check('listen = "127.0.0.1:0"\nupstream = "builtin"\nlisten_adress = "127.0.0.1:25"\n')
        line = self.assertOneLineError(r)
        self.assertTrue(line.startswith("%s:3: key 'listen_adress': " % path), line)

    def test_unknown_key_in_a_table(self):
        text = 'seed = 7\n\n[timeouts]\nclient_idle = 30\nupstream_greting = 10\n'
        path, r = self.check(text)
        line = self.assertOneLineError(r)
        m = re.match(r"^(.*):(\d+): key '([^']*)': (.+)$", line)
        self.assertIsNotNone(m, line)
        self.assertEqual(m.group(1), path)
        self.assertEqual(m.group(2), "5")
        self.assertIn("upstream_greting", m.group(3))

    def test_bad_value_names_file_line_and_key(self):
        path, r = self.check('max_sessions = 10\n\n[data]\nbare_line_endings = "lenient"\n')
        line = self.assertOneLineError(r)
        m = re.match(r"^(.*):(\d+): key '([^']*)': (.+)$", line)
        self.assertIsNotNone(m, line)
        self.assertEqual((m.group(1), m.group(2)), (path, "4"))
        self.assertIn("bare_line_endings", m.group(3))

    # Item 19: a reply code the relay cannot stand behind is reported at the code's line.
    def test_bad_fault_code_is_reported_at_its_line(self):
        text = ('listen = "127.0.0.1:0"\n\n[[fault]]\nname = "full"\ntype = "reply"\nphase = "data_end"\n'
                'code = 250\ntext = "ok"\n')
        path, r = self.check(text)
        line = self.assertOneLineError(r)
        self.assertTrue(line.startswith("%s:7: key 'code': code 250 at phase 'data_end'" % path), line)

    # Item 20: timeouts take duration strings; numbers of seconds still work.
    def test_timeouts_as_duration_strings(self):
        path, r = self.check('[timeouts]\nclient_idle = "5m"\nupstream_reply = 30\ndrain = "250ms"\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        path, r = self.check('[timeouts]\n\nclient_idle = "5 minutes"\n')
        line = self.assertOneLineError(r)
        self.assertTrue(line.startswith("%s:3: key 'timeouts.client_idle': " % path), line)

    def test_missing_file(self):
        r = run_mailtap(["check-config", os.path.join(self.workdir, "absent.toml")])
        line = self.assertOneLineError(r)
        self.assertIn("absent.toml", line)


class RunUsage(IntegrationTest):

    def run_fails(self, *args):
        r = run_mailtap(["run", "--captures", os.path.join(self.workdir, "caps"), *args], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stdout, b"", "printed a ready line although it failed")
        lines = r.stderr.decode("utf-8", "replace").splitlines()
        self.assertEqual(len(lines), 1, lines)
        return lines[0]

    def test_listen_nonsense(self):
        line = self.run_fails("--listen", "nonsense")
        self.assertIn("nonsense", line)
        self.assertIn("--listen", line)

    def test_listen_bad_port(self):
        self.assertIn("127.0.0.1:99999", self.run_fails("--listen", "127.0.0.1:99999"))

    def test_upstream_nonsense(self):
        self.assertIn("nonsense", self.run_fails("--listen", "127.0.0.1:0", "--upstream", "nonsense"))

    def test_upstream_port_0(self):
        # Accepted before, and every session then failed (a newcomer's trial); the config
        # file's upstream already refused it.
        self.assertIn("port 0", self.run_fails("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:0"))

    def test_bare_line_endings_bad_mode(self):
        self.assertIn("lenient", self.run_fails("--listen", "127.0.0.1:0", "--bare-line-endings", "lenient"))

    def test_config_with_unknown_key(self):
        path = self.write_file("bad.toml", b'listen = "127.0.0.1:0"\nbogus = 1\n')
        line = self.run_fails("--config", path)
        self.assertIn("%s:2: key 'bogus'" % path, line)

    def test_config_errors_escape_bidirectional_controls_and_line_separators(self):
        # A hostile trial: the error line echoed a value's U+202E raw, which reversed the rest of
        # the line on the terminal; it is escaped as the capture readers' errors are
        # (captures/show.hpp terminal_safe). U+2028 raw would also split the line.
        for ch in ("\u202e", "\u2066", "\u200f", "\u061c", "\u2028", "\u2029"):
            with self.subTest(ch="U+%04X" % ord(ch)):
                raw = ch.encode("utf-8")
                escaped = "".join("\\x%02x" % b for b in raw)
                path = self.write_file("bidi.toml", b'listen = "127.0.0.1:25' + raw + b'25"\n')
                line = self.run_fails("--config", path)
                self.assertIn("%s:1: key 'listen'" % path, line)
                self.assertIn("127.0.0.1:25%s25" % escaped, line)
                self.assertNotIn(ch, line)

    def test_scenario_file_errors_escape_bidirectional_controls(self):
        # A hostile trial: `--scenario`'s error echoed the file's U+202E raw (config errors
        # escaped it since 4fa4545, scenario files did not), reversing the rest of the line.
        for ch in ("\u202e", "\u2066", "\u2028", "\u0085"):
            with self.subTest(ch="U+%04X" % ord(ch)):
                raw = ch.encode("utf-8")
                path = self.write_file("bidi.toml", b'[[fault]]\nname = "d"\ntype = "delay"\nphase = "mail"\n'
                                                    b'delay = "5' + raw + b's"\n')
                line = self.run_fails("--listen", "127.0.0.1:0", "--scenario", path)
                self.assertIn("--scenario: %s:5: key 'delay'" % path, line)
                self.assertIn("'5%ss'" % "".join("\\x%02x" % b for b in raw), line)
                self.assertNotIn(ch, line)

    def test_flag_values_are_echoed_with_their_controls_escaped(self):
        # A hostile trial: `--listen '<raw>': ...` echoed the value as given, an ESC sequence
        # (it coloured the terminal) or a U+202E included.
        for value, escaped in (("127.0.0.1:x\x1b[31m", "127.0.0.1:x\\x1b[31m"),
                               ("127.0.0.1:\u202e52", "127.0.0.1:\\xe2\\x80\\xae52")):
            for flag in ("--listen", "--admin", "--upstream", "--log-level", "--bare-line-endings"):
                with self.subTest(flag=flag, value=value):
                    args = ["--listen", "127.0.0.1:0", flag, value] if flag != "--listen" else [flag, value]
                    r = run_mailtap(["run", "--captures", os.path.join(self.workdir, "caps"), *args], timeout=20)
                    self.assertEqual(r.returncode, 2, r)
                    err = r.stderr.decode("utf-8", "replace")
                    self.assertEqual(len(err.splitlines()), 1, err)
                    self.assertIn("%s '%s'" % (flag, escaped), err)
                    self.assertNotIn("\x1b", err)
                    self.assertNotIn("\u202e", err)

    def test_a_single_valued_option_given_twice_says_so(self):
        # A newcomer's trial: CLI11's own words, "--admin: At Most 1 required but received 2".
        r = run_mailtap(["run", "--admin", "127.0.0.1:0", "--admin", "127.0.0.1:1"], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stderr.decode(), "mailtap: --admin given 2 times; give it once\n")
        r = run_mailtap(["run", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
                        timeout=20)
        self.assertEqual(r.stderr.decode(), "mailtap: --listen given 3 times; give it once\n")

    def test_unknown_flag(self):
        self.run_fails("--listen", "127.0.0.1:0", "--no-such-flag")

    # Item 18: the values the config file refuses are refused on the command line too.
    def test_log_level_verbose_is_refused(self):
        line = self.run_fails("--listen", "127.0.0.1:0", "--log-level", "verbose")
        self.assertIn("--log-level", line)
        self.assertIn("verbose", line)

    def test_negative_seed_is_refused(self):
        for seed in ("-1", "1.5", "18446744073709551616", "0x10"):
            with self.subTest(seed=seed):
                line = self.run_fails("--listen", "127.0.0.1:0", "--seed", seed)
                self.assertIn("--seed", line)

    def test_negative_counts_are_refused(self):
        for flag, value in (("--max-sessions", "-1"), ("--max-sessions", "0"), ("--threads", "-1"),
                            ("--threads", "257"), ("--busy-poll-us", "-1"), ("--busy-poll-us", "100001")):
            with self.subTest(flag=flag, value=value):
                line = self.run_fails("--listen", "127.0.0.1:0", flag, value)
                self.assertIn("%s '%s'" % (flag, value), line)

    def test_largest_seed_is_taken(self):
        m = Mailtap(self.workdir, minimal=True, args=["--seed", "18446744073709551615"])
        self.addCleanup(m.stop)
        self.quit(self.greeted_client(m.port))
        self.assertCaptureComplete(self.single_capture(m))

    def test_config_file_is_used(self):
        path = self.write_file("ok.toml", VALID_CONFIG.encode())
        m = Mailtap(self.workdir, args=["--config", path])
        self.addCleanup(m.stop)
        self.assertEqual(m.upstream_label, "builtin")
        c = self.greeted_client(m.port)
        self.quit(c)
        cap = self.single_capture(m)
        self.assertEqual(cap.header["bare_eol"], "normalize")


class FailedStart(IntegrationTest):
    """A start that fails on an address it cannot bind says so first, on one line, and leaves
    no captures directory or index behind (a newcomer's trial found index.sqlite3 after the
    exit 2, and the certificate's line before the error)."""

    def held_port(self):
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind((LOOPBACK, 0))
        s.listen()
        return s.getsockname()[1]

    def test_an_address_in_use_is_the_only_line_and_nothing_is_left_behind(self):
        port = self.held_port()
        cases = (("listen", ["--listen", "%s:%d" % (LOOPBACK, port)], "cannot listen on %s:%d (--listen, or listen in the config file)"),
                 ("smtps", ["--listen", "%s:0" % LOOPBACK, "--listen-tls", "%s:%d" % (LOOPBACK, port)],
                  "cannot listen on %s:%d (--listen-tls, or [tls] listen in the config file)"),
                 ("admin", ["--listen", "%s:0" % LOOPBACK, "--admin", "%s:%d" % (LOOPBACK, port)],
                  "cannot listen on %s:%d (admin API)"))
        for name, args, expected in cases:
            with self.subTest(name):
                parent = os.path.join(self.workdir, "new-" + name)
                caps = os.path.join(parent, "caps")
                r = run_mailtap(["run", "--captures", caps, *args], timeout=20)
                self.assertEqual(r.returncode, 2, r)
                self.assertEqual(r.stdout, b"", r)
                self.assertIn(expected % (LOOPBACK, port), r.stderr.decode())
                if name != "admin":   # the admin API starts after the relay's certificate is loaded
                    self.assertEqual(len(r.stderr.decode().splitlines()), 1, r.stderr)
                if os.path.exists(parent):
                    self.fail("a failed start left %s" % [d for d, _, _ in os.walk(parent)])

    def test_only_what_the_start_made_is_removed(self):
        # A review: a dangling symlink on the way (a volume not mounted yet) was removed, and a
        # path through a directory the start made ("new/../caps") removed an existing index.
        port = self.held_port()
        link = os.path.join(self.workdir, "data")
        os.symlink(os.path.join(self.workdir, "not-mounted"), link)
        r = run_mailtap(["run", "--captures", os.path.join(link, "caps"), "--listen", "%s:%d" % (LOOPBACK, port)],
                        timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertTrue(os.path.islink(link), "the symlink was removed")
        caps = os.path.join(self.workdir, "caps")
        m = self.start_mailtap(captures=caps)
        m.stop()
        before = sorted(os.listdir(caps))
        r = run_mailtap(["run", "--captures", os.path.join(self.workdir, "new", "..", "caps"),
                         "--listen", "%s:%d" % (LOOPBACK, port)], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(sorted(os.listdir(caps)), before)

    def test_an_existing_directory_and_index_are_kept(self):
        caps = os.path.join(self.workdir, "caps")
        m = self.start_mailtap(captures=caps)
        m.stop()
        before = sorted(os.listdir(caps))
        self.assertIn("index.sqlite3", before)
        r = run_mailtap(["run", "--captures", caps, "--listen", "%s:%d" % (LOOPBACK, self.held_port())], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(sorted(os.listdir(caps)), before)


class SelfAsUpstream(IntegrationTest):
    """mailtap never relays to itself: an upstream that is one of its own listeners is refused at
    start when it is an address, and answered 421 when a name resolves to it, instead of each
    session opening another until max_sessions are taken."""

    def start_fails(self, *args):
        r = run_mailtap(["run", "--captures", os.path.join(self.workdir, "caps"), "--admin", "off", *args], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stdout, b"", "printed a ready line although it failed")
        errors = [line for line in r.stderr.decode("utf-8", "replace").splitlines() if line.startswith("mailtap run:")]
        self.assertEqual(len(errors), 1, r.stderr)
        return errors[0]

    def test_its_own_listening_address_is_refused_at_start(self):
        port = free_port()
        line = self.start_fails("--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % port)
        self.assertIn("own SMTP listener (--listen, or listen in the config file)", line)

    def test_its_own_listener_is_the_only_line_said(self):
        # A newcomer's trial: the certificate was loaded (or generated) and its info line logged
        # before this usage error.
        port = free_port()
        state = os.path.join(self.workdir, "state")
        config = self.write_file("own-state.toml", ('[tls]\nstate_dir = "%s"\n' % state).encode())
        r = run_mailtap(["run", "--config", config, "--captures", os.path.join(self.workdir, "caps"), "--admin", "off",
                         "--listen", "127.0.0.1:%d" % port, "--upstream", "127.0.0.1:%d" % port], timeout=20)
        self.assertEqual(r.returncode, 2, r)
        lines = r.stderr.decode("utf-8", "replace").splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("own SMTP listener", lines[0])
        self.assertFalse(os.path.exists(state), "generated a certificate for a start that was refused")

    def test_its_own_listener_set_in_the_config_file_names_the_key_too(self):
        # A newcomer's trial: the address came from the config file, and the error named --listen.
        port = free_port()
        config = self.write_file("own.toml", ('listen = "127.0.0.1:%d"\nupstream = "127.0.0.1:%d"\n' % (port, port)).encode())
        line = self.start_fails("--config", config)
        self.assertIn("own SMTP listener (--listen, or listen in the config file)", line)

    def test_its_own_smtps_listener_is_refused_at_start(self):
        port = free_port()
        line = self.start_fails("--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:%d" % port,
                                "--upstream", "127.0.0.1:%d" % port)
        self.assertIn("own SMTPS listener (--listen-tls, or [tls] listen in the config file)", line)

    def test_the_unspecified_and_ipv4_mapped_addresses_of_its_listener_are_refused_at_start(self):
        # A hostile trial: these dialled the listener on 127.0.0.1, and one client's session
        # opened another until max_sessions were taken.
        for upstream in ("0.0.0.0:%d", "[::ffff:127.0.0.1]:%d", "[::]:%d"):
            port = free_port()
            line = self.start_fails("--listen", "127.0.0.1:%d" % port, "--upstream", upstream % port)
            self.assertIn("own SMTP listener (--listen, or listen in the config file)", line)

    def test_a_wildcard_listener_is_refused_on_an_interface_address(self):
        own = own_interface_address()
        port = free_port()
        line = self.start_fails("--listen", "0.0.0.0:%d" % port, "--upstream", "%s:%d" % (own, port))
        self.assertIn("own SMTP listener", line)

    def test_a_name_that_resolves_to_it_gets_421_and_opens_no_second_session(self):
        port = free_port()
        m = self.start_mailtap(upstream="localhost:%d" % port, listen="127.0.0.1:%d" % port)
        c = self.connect(m.port)
        greeting = c.reply()
        self.assertEqual(greeting.code, 421, greeting)
        self.assertIn("own SMTP listener", greeting.text)
        c.close()
        wait_until(lambda: capture_paths(m.captures) and Capture(capture_paths(m.captures)[-1]).end, 10,
                   "the session's end record")
        time.sleep(0.5)   # a session it had opened to itself would have its capture by now
        paths = capture_paths(m.captures)
        self.assertEqual(len(paths), 1, paths)
        cap = Capture(paths[0])
        self.assertEqual(cap.end["reason"], "upstream_unreachable")
        self.assertEqual(cap.byte_records_on("upstream"), [], "nothing was sent upstream")


class ShowAndCaptureFiles(IntegrationTest):

    def one_session(self, **kw):
        m = self.start_mailtap(**kw)
        path = self.write_file("m.eml", b"Subject: cli\r\nMessage-ID: <cli@example.test>\r\n\r\nhi\r\n")
        rc, out = self.swaks(m.port, "--to", "rcpt@example.test", "--data", "@" + path)
        self.assertEqual(rc, 0, out)
        return m, self.single_capture(m)

    def test_show_json_of_a_complete_capture(self):
        _, cap = self.one_session()
        doc = show_json(cap.path)
        for key in ("id", "client", "upstream", "started_at", "outcome", "complete", "end_reason",
                    "seed", "stages", "transactions", "events"):
            self.assertIn(key, doc)
        self.assertTrue(doc["complete"])
        self.assertEqual(doc["outcome"], "delivered")
        self.assertEqual(doc["upstream"], "builtin")
        self.assertEqual(doc["id"] + ".jsonl", os.path.basename(cap.path))
        self.assertEqual(doc["seed"], cap.header["seed"])
        for st in doc["stages"]:
            for key in ("name", "start_us", "duration_us", "upstream_us", "relay_us", "think_us"):
                self.assertIn(key, st)
            # FORMAT.md: relay_us = duration - upstream; 0 for body (the sender's transfer time).
            expected = 0 if st["name"] == "body" else st["duration_us"] - st["upstream_us"]
            self.assertEqual(st["relay_us"], expected, st)
        ev = doc["events"]
        self.assertTrue(ev)
        self.assertEqual(ev, sorted(ev, key=lambda e: e["t_us"]))
        for e in ev:
            self.assertIn(e["leg"], ("client", "upstream"))
            self.assertIn(e["dir"], ("in", "out"))
        # The text form works too.
        r = run_mailtap(["show", cap.path])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout)

    def test_show_by_session_id_with_dir(self):
        m, cap = self.one_session()
        doc_id = os.path.basename(cap.path)[:-len(".jsonl")]
        r = run_mailtap(["show", doc_id, "--dir", m.captures, "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_show_capture_without_end_line(self):
        _, cap = self.one_session()
        with open(cap.path, "rb") as f:
            lines = f.read().split(b"\n")
        self.assertEqual(lines[-1], b"")
        cut = self.write_file("cut.jsonl", b"\n".join(lines[:-2]) + b"\n")   # end line removed
        doc = show_json(cut)
        self.assertFalse(doc["complete"])
        self.assertEqual(len(doc["transactions"]), 1)   # what was recorded is still shown

    def test_show_capture_cut_mid_line(self):
        _, cap = self.one_session()
        with open(cap.path, "rb") as f:
            data = f.read()
        cut = self.write_file("cut-mid.jsonl", data[:len(data) - 40])        # inside the end line
        doc = show_json(cut)
        self.assertFalse(doc["complete"])

    def test_show_nonexistent(self):
        r = run_mailtap(["show", os.path.join(self.workdir, "nonexistent.jsonl")])
        self.assertEqual(r.returncode, 2)
        lines = r.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("nonexistent", lines[0])

    def test_show_not_a_capture(self):
        path = self.write_file("garbage.jsonl", b"this is not json\n")
        r = run_mailtap(["show", path, "--json"])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.decode().splitlines()), 1)

    def test_capture_dir_0700_and_files_0600_whatever_the_umask(self):
        captures = os.path.join(self.workdir, "new", "captures")
        m, cap = self.one_session(captures=captures, umask=0)
        self.assertEqual(stat.S_IMODE(os.stat(captures).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(cap.path).st_mode), 0o600)
        self.assertCaptureComplete(cap)

    def test_existing_capture_dir_is_tightened_to_0700(self):
        captures = os.path.join(self.workdir, "loose")
        os.makedirs(captures)
        os.chmod(captures, 0o755)
        _, cap = self.one_session(captures=captures)
        self.assertEqual(stat.S_IMODE(os.stat(captures).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(cap.path).st_mode), 0o600)

    def test_version_and_help(self):
        r = run_mailtap(["--version"])
        self.assertEqual(r.returncode, 0)
        self.assertIn(b"mailtap", r.stdout)
        for sub in ("run", "show", "check-config"):
            r = run_mailtap([sub, "--help"])
            self.assertEqual(r.returncode, 0, sub)

    def test_no_subcommand_is_a_usage_error(self):
        r = subprocess.run([mailtap_bin()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(r.returncode, 2)

    def test_unknown_subcommand_is_named(self):
        r = run_mailtap(["frobnicate", "--json"])
        self.assertEqual(r.returncode, 2)
        lines = r.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("unknown subcommand 'frobnicate'", lines[0])
        self.assertIn("check-config", lines[0])   # and the ones there are

    def test_a_command_without_its_subcommand_names_the_ones_it_has(self):
        # A newcomer's trial: `mailtap captures` said only "A subcommand is required".
        for words, expected in ((["captures"], ("prune", "list", "search", "reindex")),
                                (["replay"], ("server", "client")),
                                (["faults"], ("list", "add", "remove", "reset")),
                                ([], ("run", "check-config"))):
            r = run_mailtap(words)
            self.assertEqual(r.returncode, 2, words)
            lines = r.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, lines)
            command = " ".join(["mailtap", *words])
            self.assertTrue(lines[0].startswith(command + ": a subcommand is required (expected one of "), lines)
            for name in expected:
                self.assertIn(name, lines[0])
            self.assertIn("see '%s --help'" % command, lines[0])

    def test_an_unknown_subcommand_of_a_command_is_named(self):
        # A newcomer's trial: `mailtap captures bogus` said "a subcommand is required",
        # without naming 'bogus'; worded as the top level's unknown subcommand (relay/main.cpp).
        for words, expected in ((["captures", "bogus"], ("prune", "list", "search", "reindex")),
                                (["replay", "bogus"], ("server", "client")),
                                (["faults", "bogus"], ("list", "add", "remove", "reset")),
                                (["sessions", "bogus"], ("list",)),
                                (["export", "bogus"], ("pcap",))):
            r = run_mailtap(words)
            self.assertEqual(r.returncode, 2, words)
            lines = r.stderr.decode().splitlines()
            self.assertEqual(len(lines), 1, lines)
            command = " ".join(["mailtap", *words[:-1]])
            self.assertTrue(lines[0].startswith(command + ": unknown subcommand 'bogus' (expected one of "), lines)
            for name in expected:
                self.assertIn(name, lines[0])
            self.assertIn("see '%s --help'" % command, lines[0])

    def test_version_is_the_projects_in_both_places(self):
        # One version string: project(VERSION) in CMakeLists.txt, shown by --version and
        # written into every capture's header.
        top = os.path.join(os.path.dirname(__file__), "..", "..", "CMakeLists.txt")
        with open(top, encoding="utf-8") as f:
            version = re.search(r"project\(mailtap VERSION (\S+)", f.read()).group(1)
        r = run_mailtap(["--version"])
        self.assertEqual(r.stdout.decode().strip(), "mailtap " + version)
        _, cap = self.one_session()
        self.assertEqual(cap.header["relay"], "mailtap " + version)

    # Item 18: several captures, a directory, or `latest`.
    def sessions(self, n):
        m = self.start_mailtap()
        for i in range(n):
            path = self.write_file("m%d.eml" % i, b"Subject: s%d\r\nMessage-ID: <s%d@example.test>\r\n\r\nhi\r\n"
                                   % (i, i))
            rc, out = self.swaks(m.port, "--to", "rcpt@example.test", "--data", "@" + path)
            self.assertEqual(rc, 0, out)
        caps = m.wait_captures(n)
        return m, sorted(c.path for c in caps)

    def shown_ids(self, *args):
        r = run_mailtap(["show", *args, "--json"])
        self.assertEqual(r.returncode, 0, r.stderr)
        return [json.loads(line)["id"] for line in r.stdout.decode().splitlines()]

    @staticmethod
    def id_of(path):
        return os.path.basename(path)[:-len(".jsonl")]

    def test_show_several_files(self):
        _, paths = self.sessions(2)
        self.assertEqual(self.shown_ids(paths[1], paths[0]), [self.id_of(paths[1]), self.id_of(paths[0])])
        r = run_mailtap(["show", paths[0], paths[1]])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().count(self.id_of(paths[0])), 1)
        self.assertEqual(r.stdout.decode().count(self.id_of(paths[1])), 1)

    def test_show_a_directory_in_start_order(self):
        m, paths = self.sessions(3)
        self.assertEqual(self.shown_ids(m.captures), [self.id_of(p) for p in paths])

    def test_show_latest(self):
        m, paths = self.sessions(2)
        self.assertEqual(self.shown_ids("latest", "--dir", m.captures), [self.id_of(paths[-1])])

    def golden_capture(self, directory, name, **header_fields):
        """tests/golden/show_basic.jsonl as DIRECTORY/NAME.jsonl, its header naming it (and
        changed by `header_fields`)."""
        golden = os.path.join(os.path.dirname(__file__), "..", "golden", "show_basic.jsonl")
        with open(golden, encoding="utf-8") as f:
            lines = f.read().splitlines(True)
        header = json.loads(lines[0])
        header.update(session=name, **header_fields)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n" + "".join(lines[1:]))

    def test_latest_and_start_order_between_two_runs_in_one_second(self):
        # A newcomer's trial: two relay runs in one second (a restart, two relays on one
        # directory) have names that differ only after the second, by each run's random
        # nonce. Name order put the later session first and 'latest' named the older one.
        d = os.path.join(self.workdir, "same-second")
        for name, started in (("20261205-200000-ffffffff-000001", "2026-12-05T20:00:00.100000Z"),
                              ("20261205-200000-00000000-000001", "2026-12-05T20:00:00.900000Z")):
            self.golden_capture(d, name, started_at=started)
        self.assertEqual(self.shown_ids("latest", "--dir", d), ["20261205-200000-00000000-000001"])
        self.assertEqual(self.shown_ids(d), ["20261205-200000-ffffffff-000001", "20261205-200000-00000000-000001"])

    def test_latest_is_never_another_programs_file(self):
        # A hostile trial: app.jsonl sorts after every date, and 'latest' picked it and failed.
        d = os.path.join(self.workdir, "with-others")
        name = "20261205-200000-0a1b2c3d-000007"
        self.golden_capture(d, name)
        with open(os.path.join(d, "app.jsonl"), "w", encoding="utf-8") as f:
            f.write('{"k": "v"}\n')
        self.assertEqual(self.shown_ids("latest", "--dir", d), [name])

    def test_show_latest_in_an_empty_directory_is_a_usage_error(self):
        empty = os.path.join(self.workdir, "empty")
        os.makedirs(empty)
        r = run_mailtap(["show", "latest", "--dir", empty])
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.decode().splitlines()), 1)

    def test_show_several_with_one_missing_shows_the_rest_and_exits_2(self):
        _, paths = self.sessions(1)
        r = run_mailtap(["show", os.path.join(self.workdir, "absent.jsonl"), paths[0], "--json"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("absent", r.stderr.decode())
        self.assertEqual([json.loads(l)["id"] for l in r.stdout.decode().splitlines()], [self.id_of(paths[0])])


if __name__ == "__main__":
    unittest.main()
