"""Captures do not fill the disk (issue 13 item 5; README "Captures", "Keeping the disk").

Real captures written by mailtap from swaks sessions, aged by setting their modification
time: `mailtap captures prune` removes the finished ones past --max-age or beyond
--max-bytes, oldest first, and never one without its end record; `mailtap run` with
--captures-max-age prunes the directory as it starts, and keeps relaying.
"""

import os
import time
import unittest

from harness import IntegrationTest, capture_has_end, capture_paths, run_mailtap, wait_until

HOUR = 3600


class CapturesRetention(IntegrationTest):

    def record_sessions(self, count):
        """`count` finished captures from swaks through mailtap and its built-in sink."""
        m = self.start_mailtap()
        for i in range(count):
            code, transcript = self.swaks(m.port, "--to", "r%d@example.com" % i)
            self.assertEqual(code, 0, transcript)
        m.wait_captures(count)
        m.stop()
        return m.captures, capture_paths(m.captures)

    def age(self, path, seconds):
        t = time.time() - seconds
        os.utime(path, (t, t))

    def cut_capture(self, directory, seconds_old):
        """A capture a crash cut short: a header and half a line, no end record."""
        path = os.path.join(directory, "00000000T000000Z-cut.jsonl")
        with open(path, "wb") as f:
            f.write(b'{"type":"header","format":"mailtap-capture","version":5,"session":"00000000T000000Z-cut"}\n{"type":"note","t_')
        self.age(path, seconds_old)
        return path

    def prune(self, *args):
        return run_mailtap(["captures", "prune", *args])

    def test_prune_by_age_removes_only_old_finished_captures(self):
        directory, paths = self.record_sessions(3)
        self.assertEqual(len(paths), 3)
        self.age(paths[0], 3 * HOUR)
        self.age(paths[1], 2 * HOUR)
        cut = self.cut_capture(directory, 5 * HOUR)
        r = self.prune("--dir", directory, "--max-age", "1h")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(capture_paths(directory), sorted([paths[2], cut]))
        self.assertIn(b"removed 2 capture(s)", r.stdout)

    def test_prune_takes_days_and_names_each_capture_it_removes(self):
        # A newcomer's trial: `--max-age 7d` was refused, and prune printed only counts.
        directory, paths = self.record_sessions(3)
        self.age(paths[0], 9 * 24 * HOUR)
        self.age(paths[1], 8 * 24 * HOUR)
        r = self.prune("--dir", directory, "--max-age", "7d")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(capture_paths(directory), paths[2:])
        lines = r.stdout.decode().splitlines()
        ids = [os.path.basename(p)[:-len(".jsonl")] for p in paths]
        self.assertEqual(lines[:2], ["removed " + ids[0], "removed " + ids[1]])   # oldest first
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(lines[2].startswith("%s: removed 2 capture(s)" % directory), lines)
        # max_bytes counts the captures only; the index is named apart with its size.
        index_bytes = os.path.getsize(os.path.join(directory, "index.sqlite3"))
        self.assertTrue(lines[2].endswith("; index.sqlite3 %d bytes, not counted" % index_bytes), lines)

    def test_prune_leaves_a_renamed_copy_of_a_capture_alone(self):
        # A newcomer's trial: prune removed evidence-copy.jsonl, a copy kept on purpose.
        directory, paths = self.record_sessions(1)
        copy = os.path.join(directory, "evidence-copy.jsonl")
        with open(paths[0], "rb") as src, open(copy, "wb") as dst:
            dst.write(src.read())
        self.age(paths[0], 3 * HOUR)
        self.age(copy, 3 * HOUR)
        r = self.prune("--dir", directory, "--max-age", "1h")
        self.assertEqual(r.returncode, 0, r)
        self.assertFalse(os.path.exists(paths[0]))
        self.assertTrue(os.path.exists(copy))
        summary = r.stdout.decode().splitlines()[-1]
        self.assertIn("removed 1 capture(s)", summary)
        self.assertIn("; 1 *.jsonl file(s) not captures (no header naming the file", summary)

    def test_prune_by_size_removes_the_oldest_finished_first(self):
        directory, paths = self.record_sessions(3)
        for i, p in enumerate(paths):   # oldest first in session order
            self.age(p, (10 - i) * HOUR)
        sizes = [os.path.getsize(p) for p in paths]
        limit = sizes[1] + sizes[2]   # room for the two newest
        r = self.prune("--dir", directory, "--max-bytes", str(limit))
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(capture_paths(directory), paths[1:])
        self.assertTrue(all(capture_has_end(p) for p in paths[1:]))

    def test_prune_refuses_bad_input_with_one_line(self):
        for args in (["--max-age", "a week"], ["--max-bytes", "0"], []):
            r = self.prune("--dir", self.workdir, *args)
            self.assertEqual(r.returncode, 2, r)
            self.assertEqual(len(r.stderr.decode().splitlines()), 1, r)
            self.assertEqual(r.stdout, b"")

    def test_run_prunes_at_start_and_keeps_relaying(self):
        directory, paths = self.record_sessions(2)
        for p in paths:
            self.age(p, 2 * HOUR)
        cut = self.cut_capture(directory, 2 * HOUR)
        m = self.start_mailtap(captures=directory, args=["--captures-max-age", "1h"], name="second")
        wait_until(lambda: not any(os.path.exists(p) for p in paths), 10, "old captures removed at start")
        self.assertTrue(os.path.exists(cut), "an unfinished capture is never removed")
        code, transcript = self.swaks(m.port, "--to", "after@example.com")
        self.assertEqual(code, 0, transcript)
        fresh = m.wait_captures(2)   # the cut one and the new session's
        self.assertEqual(len(fresh), 2)


if __name__ == "__main__":
    unittest.main()
