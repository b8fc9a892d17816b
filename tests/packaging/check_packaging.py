"""The service packaging (packaging/README.md) checked from the build tree: the .deb that
`cpack -G DEB` makes (dpkg-deb -c and -I: the files, the conffile, the maintainer scripts, the
Depends line dpkg-shlibdeps fills), and the systemd unit `cmake --install` writes, under
`systemd-analyze verify` (which loads unit files without systemd running as PID 1).

MAILTAP_BUILD_DIR: a configured and built tree (its CPackConfig.cmake, its mailtap binary).
"""

import gzip
import os
import re
import shutil
import subprocess
import tempfile
import unittest

BUILD_DIR = os.environ.get("MAILTAP_BUILD_DIR", "")

PACKAGED = {
    "./usr/bin/mailtap",
    "./usr/share/man/man1/mailtap.1.gz",
    "./etc/mailtap/mailtap.toml",
    "./lib/systemd/system/mailtap.service",
    "./usr/share/doc/mailtap/README.md",
    "./usr/share/doc/mailtap/examples/port25.conf",
    "./usr/share/doc/mailtap/examples/mailtap.example.toml",
}


def run(argv, env=None, timeout=540):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=env, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def unit_settings(text):
    """[Section] -> list of (key, value), in file order (repeated keys kept)."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, [])
            continue
        key, _, value = line.partition("=")
        out[section].append((key.strip(), value.strip()))
    return out


def last(settings, section, key):
    values = [v for k, v in settings.get(section, []) if k == key]
    return values[-1] if values else None


class PackagingTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(os.path.join(BUILD_DIR, "CPackConfig.cmake")):
            raise AssertionError("MAILTAP_BUILD_DIR=%r is not a configured build tree" % BUILD_DIR)
        cls.tmp = tempfile.mkdtemp(prefix="mailtap-packaging-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, True)


class deb_tests(PackagingTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rc, out, err = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"),
                            "-B", cls.tmp])
        if rc != 0:
            raise AssertionError("cpack -G DEB exited %d:\n%s\n%s" % (rc, out, err))
        debs = [f for f in os.listdir(cls.tmp) if f.endswith(".deb")]
        if len(debs) != 1:
            raise AssertionError("expected one .deb in %s, found %r" % (cls.tmp, debs))
        cls.deb = os.path.join(cls.tmp, debs[0])
        cls.root = os.path.join(cls.tmp, "root")
        rc, _, err = run(["dpkg-deb", "-x", cls.deb, cls.root])
        if rc != 0:
            raise AssertionError("dpkg-deb -x: " + err)
        cls.control_dir = os.path.join(cls.tmp, "control")
        rc, _, err = run(["dpkg-deb", "-e", cls.deb, cls.control_dir])
        if rc != 0:
            raise AssertionError("dpkg-deb -e: " + err)

    def info(self, *member):
        rc, out, err = run(["dpkg-deb", "-I", self.deb, *member])
        self.assertEqual(rc, 0, err)
        return out

    def test_contents(self):
        rc, out, err = run(["dpkg-deb", "-c", self.deb])
        self.assertEqual(rc, 0, err)
        entries = {}
        for line in out.splitlines():
            fields = line.split()
            entries[fields[-1]] = fields[0]
        self.assertLessEqual(PACKAGED, set(entries), out)
        self.assertEqual(entries["./usr/bin/mailtap"], "-rwxr-xr-x")
        self.assertEqual(entries["./etc/mailtap/mailtap.toml"], "-rw-r--r--")
        # Nothing from the build or test trees, nothing outside the Debian layout.
        for path in entries:
            with self.subTest(path=path):
                self.assertRegex(path, r"^\./(usr/(bin|share)|etc/mailtap|lib/systemd/system)(/|$)|^\./$|"
                                       r"^\./(usr|etc|lib|lib/systemd)/$")

    def test_control_conffile_scripts_and_depends(self):
        control = self.info("control")
        self.assertRegex(control, r"(?m)^Package: mailtap$")
        depends = re.search(r"(?m)^Depends: (.*)$", control)
        self.assertIsNotNone(depends, control)
        names = {d.strip().split(" ")[0] for d in depends.group(1).split(",")}
        # From dpkg-shlibdeps (the binary's shared libraries), and the scripts' own needs.
        for needed in ("libc6", "libstdc++6", "libssl3", "libsystemd0", "adduser", "procps"):
            self.assertIn(needed, names, depends.group(1))
        self.assertEqual(self.info("conffiles").split(), ["/etc/mailtap/mailtap.toml"])
        listing = self.info()
        for script in ("postinst", "prerm", "postrm"):
            self.assertRegex(listing, r"(?m)^ +\d+ bytes, +\d+ lines +\* +%s " % script, listing)
        for script in ("postinst", "prerm", "postrm"):
            rc, _, err = run(["sh", "-n", os.path.join(self.control_dir, script)])
            self.assertEqual(rc, 0, "%s: %s" % (script, err))
        postinst = self.info("postinst")
        self.assertRegex(postinst, r"adduser --system .*mailtap")
        self.assertIn("/var/lib/mailtap", postinst)
        self.assertIn("rm -rf /var/lib/mailtap", self.info("postrm"))

    def test_packaged_unit_runs_the_packaged_binary_and_config(self):
        with open(os.path.join(self.root, "lib/systemd/system/mailtap.service")) as f:
            unit = unit_settings(f.read())
        self.assertEqual(last(unit, "Service", "ExecStart"), "/usr/bin/mailtap run --config /etc/mailtap/mailtap.toml")
        # The packaged binary accepts the packaged config.
        rc, out, err = run([os.path.join(self.root, "usr/bin/mailtap"), "check-config",
                            os.path.join(self.root, "etc/mailtap/mailtap.toml")])
        self.assertEqual(rc, 0, err)

    def test_man_page_is_made_from_the_help(self):
        with gzip.open(os.path.join(self.root, "usr/share/man/man1/mailtap.1.gz"), "rt", encoding="utf-8") as f:
            page = f.read()
        self.assertRegex(page, r'(?m)^\.TH MAILTAP "1"')
        for text in ("check\\-config", "\\-\\-scenario", ".SH SIGNALS", "SIGHUP", ".SH FILES",
                     "/etc/mailtap/mailtap.toml"):
            self.assertIn(text, page)
        self.assertNotIn(BUILD_DIR, page)
        # Non-ASCII help text survives help2man (a newcomer's trial: "how long (??s)").
        self.assertIn("how long (\u00b5s)", page)
        self.assertNotIn("??", page)
        # Every command the binary lists, nested ones too, has its own subsection.
        binary = os.path.join(BUILD_DIR, "relay", "mailtap")
        for words in self.commands_of(binary, []):
            self.assertIn('.SS "mailtap %s"' % " ".join(words), page)

    def commands_of(self, binary, words):
        text = subprocess.run([binary, *words, "--help"], stdout=subprocess.PIPE, check=True,
                              timeout=30).stdout.decode()
        if "\nSubcommands:\n" not in text:
            return [words]
        names = re.findall(r"(?m)^  ([a-z][a-z0-9-]*)", text.split("\nSubcommands:\n", 1)[1])
        return [leaf for name in names for leaf in self.commands_of(binary, words + [name])]


class unit_tests(PackagingTest):
    """`cmake --install` into a DESTDIR, then systemd-analyze verify on what it wrote (it
    loads the unit files and runs `man` for Documentation=; no systemd as PID 1 needed)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dest = os.path.join(cls.tmp, "dest")
        env = dict(os.environ, DESTDIR=cls.dest)
        rc, out, err = run(["cmake", "--install", BUILD_DIR, "--prefix", "/usr"], env=env)
        if rc != 0:
            raise AssertionError("cmake --install exited %d:\n%s\n%s" % (rc, out, err))
        with open(os.path.join(cls.dest, "lib/systemd/system/mailtap.service")) as f:
            cls.unit_text = f.read()
        cls.unit = unit_settings(cls.unit_text)

    def verify_env(self):
        return dict(os.environ, MANPATH=os.path.join(self.dest, "usr/share/man"))

    def verify(self, with_drop_in):
        """systemd-analyze verify on a copy whose paths point into the DESTDIR (verify checks
        that ExecStart's binary exists); every line it prints about our files fails."""
        units = tempfile.mkdtemp(dir=self.tmp)
        text = self.unit_text.replace("/usr/bin/mailtap", os.path.join(self.dest, "usr/bin/mailtap"))
        path = os.path.join(units, "mailtap.service")
        with open(path, "w") as f:
            f.write(text)
        if with_drop_in:
            os.makedirs(os.path.join(units, "mailtap.service.d"))
            shutil.copy(os.path.join(self.dest, "usr/share/doc/mailtap/examples/port25.conf"),
                        os.path.join(units, "mailtap.service.d", "port25.conf"))
        # Documentation=man:mailtap(1) is checked too: man finds the installed page via MANPATH.
        rc, out, err = run(["systemd-analyze", "verify", path], env=self.verify_env())
        ours = [l for l in (out + err).splitlines() if "mailtap" in l]
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(ours, [], out + err)
        return units

    def test_systemd_analyze_verify(self):
        self.verify(with_drop_in=False)

    def test_systemd_analyze_verify_with_the_port25_drop_in(self):
        self.verify(with_drop_in=True)

    def test_hardening_exposure_stays_low(self):
        # systemd's own rating of the sandbox, 0 (locked down) to 10; 2.0 or better ("OK").
        units = self.verify(with_drop_in=False)
        rc, out, err = run(["systemd-analyze", "security", "--offline=yes", "--threshold=20",
                            os.path.join(units, "mailtap.service")], env=self.verify_env())
        self.assertEqual(rc, 0, out + err)

    def test_verify_catches_a_broken_unit(self):
        # The check above can fail: a key systemd does not know is reported.
        units = tempfile.mkdtemp(dir=self.tmp)
        path = os.path.join(units, "mailtap.service")
        with open(path, "w") as f:
            f.write(self.unit_text.replace("/usr/bin/mailtap", os.path.join(self.dest, "usr/bin/mailtap"))
                    .replace("PrivateTmp=yes", "PrivateTmpp=yes"))
        rc, out, err = run(["systemd-analyze", "verify", path], env=self.verify_env())
        self.assertTrue([l for l in (out + err).splitlines() if "mailtap" in l and "PrivateTmpp" in l], out + err)

    def test_notify_user_state_and_hardening(self):
        s = self.unit
        expected = {
            "Type": "notify", "User": "mailtap", "StateDirectory": "mailtap", "ProtectSystem": "strict",
            "NoNewPrivileges": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
            "AmbientCapabilities": "", "ExecReload": "/bin/kill -HUP $MAINPID",
            "ExecStart": "/usr/bin/mailtap run --config /etc/mailtap/mailtap.toml",
        }
        for key, value in expected.items():
            with self.subTest(key=key):
                self.assertEqual(last(s, "Service", key), value)

    def test_port25_drop_in_grants_only_net_bind_service(self):
        with open(os.path.join(self.dest, "usr/share/doc/mailtap/examples/port25.conf")) as f:
            drop_in = unit_settings(f.read())
        self.assertEqual(drop_in, {"Service": [("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
                                               ("AmbientCapabilities", "CAP_NET_BIND_SERVICE")]})

    def test_install_layout(self):
        for path in ("usr/bin/mailtap", "usr/share/man/man1/mailtap.1.gz", "etc/mailtap/mailtap.toml",
                     "lib/systemd/system/mailtap.service"):
            with self.subTest(path=path):
                self.assertTrue(os.path.isfile(os.path.join(self.dest, path)))


if __name__ == "__main__":
    unittest.main()
