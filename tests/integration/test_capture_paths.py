"""`mailtap show` and `mailtap diagnose` named a path they cannot read: one line on stderr that
names it and says why, exit 2, nothing on stdout. A FIFO is read as it comes, as cat reads it
(`mailtap show <(zcat capture.jsonl.gz)`), never refused. A directory's captures are taken
oldest first, by the start time in each header, whatever their file names.

Run: MAILTAP_BIN=/path/to/mailtap python3 -m unittest test_capture_paths
"""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import unittest

from harness import HERE, IntegrationTest, mailtap_bin, run_mailtap, scaled

GOLDEN = os.path.join(HERE, "..", "golden", "show_text.jsonl")
NOBODY = 65534


def as_another_user():
    """For root, who reads every file: the child runs as nobody, who cannot enter a 0700
    directory of root's nor read a 0600 file of root's (as another user cannot read yours)."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


class CapturePathTest(IntegrationTest):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # nobody runs a copy of mailtap in a directory it may enter: the build's own may lie
        # under a directory of root's it may not (a clone in /root, mode 0700).
        cls.bin_dir = tempfile.mkdtemp(prefix="mailtap-capture-paths-")
        os.chmod(cls.bin_dir, 0o755)
        cls.binary = os.path.join(cls.bin_dir, "mailtap")
        shutil.copy(mailtap_bin(), cls.binary)
        os.chmod(cls.binary, 0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.bin_dir, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        os.chmod(self.workdir, 0o755)   # nobody may enter the work directory itself
        with open(GOLDEN, "rb") as f:
            self.golden = f.read()
        self.golden_id = json.loads(self.golden.split(b"\n", 1)[0])["session"]

    def run_both(self, path):
        """(exit code, stdout, stderr lines) of show and of diagnose, run as another user."""
        out = []
        for command in ("show", "diagnose"):
            r = subprocess.run([self.binary, command, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=scaled(30), preexec_fn=as_another_user,
                               env=dict(os.environ, HOME="/nonexistent"))
            out.append((command, r.returncode, r.stdout, r.stderr.decode("utf-8", "replace").splitlines()))
        return out

    def assertOneLineError(self, path, why):
        for command, code, stdout, err in self.run_both(path):
            self.assertEqual((code, stdout), (2, b""), (command, err))
            self.assertEqual(len(err), 1, (command, err))
            self.assertTrue(err[0].startswith("mailtap %s: %s" % (command, path)), (command, err))
            self.assertIn(why, err[0], (command, err))

    def test_a_missing_path_is_one_line(self):
        self.assertOneLineError(os.path.join(self.workdir, "absent.jsonl"), "no such file")

    def test_a_directory_without_captures_is_one_line(self):
        d = os.path.join(self.workdir, "empty")
        os.makedirs(d)
        self.assertOneLineError(d, "no captures")

    def test_a_directory_that_cannot_be_listed_is_one_line(self):
        d = os.path.join(self.workdir, "locked")
        os.makedirs(d)
        shutil.copy(GOLDEN, os.path.join(d, "s.jsonl"))
        os.chmod(d, 0o000 if os.geteuid() != 0 else 0o700)
        self.addCleanup(os.chmod, d, 0o755)
        self.assertOneLineError(d, "Permission denied")

    def test_a_file_that_cannot_be_read_is_one_line(self):
        f = os.path.join(self.workdir, "unreadable.jsonl")
        shutil.copy(GOLDEN, f)
        os.chmod(f, 0o000 if os.geteuid() != 0 else 0o600)
        self.assertOneLineError(f, "Permission denied")

    def test_a_file_in_a_directory_that_cannot_be_entered_is_not_called_missing(self):
        # Found checking the above: the file's path could not be looked at (EACCES), and the
        # line said "no such file", which sent the user looking for a file that is there.
        d = os.path.join(self.workdir, "private")
        os.makedirs(d)
        f = os.path.join(d, "s.jsonl")
        shutil.copy(GOLDEN, f)
        os.chmod(d, 0o000 if os.geteuid() != 0 else 0o700)
        self.addCleanup(os.chmod, d, 0o755)
        self.assertOneLineError(f, "Permission denied")
        for _, _, _, err in self.run_both(f):
            self.assertNotIn("no such file", err[0])

    def test_a_fifo_is_read_as_its_writer_writes_it(self):
        fifo = os.path.join(self.workdir, "capture.fifo")
        os.mkfifo(fifo)
        for command in ("show", "diagnose"):
            p = subprocess.Popen([mailtap_bin(), command, fifo, "--json"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.addCleanup(p.kill)
            # The writer appears after the reader has opened the FIFO (open blocks until both
            # ends are there), as a shell's process substitution does.
            def write():
                with open(fifo, "wb") as w:
                    w.write(self.golden)
            writer = threading.Thread(target=write)
            writer.start()
            out, err = p.communicate(timeout=scaled(30))
            writer.join(scaled(10))
            self.assertIn(p.returncode, (0, 1), (command, err))   # diagnose: 1 when it finds an error
            doc = json.loads(out.decode().splitlines()[0])
            self.assertEqual(doc.get("id", doc.get("session")), self.golden_id, (command, out))

    def test_a_directory_is_shown_and_diagnosed_oldest_first_whatever_its_file_names(self):
        """README 'Command line': a directory stands for all its captures, oldest first. Both
        went in file-name order: copies named against their order (b-first.jsonl holds the older
        session) came a-second.jsonl first."""
        m = self.start_mailtap()
        for sender in ("first@order.test", "second@order.test"):
            code, transcript = self.swaks(m.port, "--to", "a@order.test", "--from", sender)
            self.assertEqual(code, 0, transcript)
        caps = sorted(m.wait_captures(2), key=lambda c: c.header["started_at"])
        m.stop()
        d = os.path.join(self.workdir, "copies")
        os.makedirs(d)
        for cap, name in zip(caps, ("b-first.jsonl", "a-second.jsonl")):
            shutil.copyfile(cap.path, os.path.join(d, name))
        self.assertLess(caps[0].header["started_at"], caps[1].header["started_at"])
        in_start_order = [c.header["session"] for c in caps]
        r = run_mailtap(["show", d, "--json"])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([json.loads(l)["id"] for l in r.stdout.decode().splitlines()], in_start_order)
        r = run_mailtap(["show", d])
        self.assertEqual(r.returncode, 0, r)
        shown = [l.split()[1] for l in r.stdout.decode().splitlines() if l.startswith("session ")]
        self.assertEqual(shown, in_start_order, r.stdout.decode())
        r = run_mailtap(["diagnose", d, "--json"])
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual([json.loads(l)["session"] for l in r.stdout.decode().splitlines()], in_start_order)
        r = run_mailtap(["diagnose", d])
        self.assertEqual(r.returncode, 0, r)
        summary = [l.split()[0] for l in r.stdout.decode().split("\n\n")[0].splitlines()]
        self.assertEqual(summary, ["b-first.jsonl", "a-second.jsonl"], r.stdout.decode())


if __name__ == "__main__":
    unittest.main()
