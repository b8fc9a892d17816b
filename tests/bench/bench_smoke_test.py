"""The benchmark's smoke run as a test (scripts/bench --smoke, untimed): keeps scripts/bench.py
working on every commit. Runs every workload once with few messages against direct, haproxy
(when installed), mailtap with captures and mailtap --no-captures, then ten messages in flight
at once, the idle sessions and the delay accuracy, and checks the JSON it writes holds a measured row for each. Nothing here
asserts a speed: the figures of a shared machine are not a test (README "Performance")."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKLOADS = ["W1", "W2c10", "W2c100", "W3c10", "W4c1", "W4c10", "W5"]


class BenchSmoke(unittest.TestCase):

    def test_smoke_measures_every_workload(self):
        mailtap = os.environ["MAILTAP_BIN"]
        out = tempfile.mkdtemp(prefix="mailtap-bench-smoke-")
        self.addCleanup(shutil.rmtree, out, True)
        json_path = os.path.join(out, "bench.json")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench.py"), "--mailtap", mailtap, "--smoke",
                            "--json", json_path], capture_output=True, text=True, timeout=600)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        with open(json_path) as f:
            result = json.load(f)
        self.assertTrue(result["smoke"])
        peers = ["mailtap", "mailtap-nocap"] + (["haproxy"] if shutil.which("haproxy") else [])
        self.assertEqual([row["id"] for row in result["rows"]], WORKLOADS)
        for row in result["rows"]:
            self.assertGreater(row["direct_msgs_per_s"], 0, row)
            for peer in peers:
                self.assertGreater(row[f"{peer}_ratio"], 0, (peer, row))
                self.assertGreaterEqual(row[f"{peer}_cpu_us_per_msg"], 0, (peer, row))
        in_flight = {row["peer"]: row for row in result["w5_in_flight"]}
        self.assertEqual(sorted(in_flight), sorted(peers))
        for row in in_flight.values():
            self.assertEqual((row["messages"], row["message_bytes"]), (10, 1024 * 1024), row)   # the smoke's size
            self.assertIn("rss_growth_kib", row)
        self.assertGreater(result["file_writes"]["new_data_mb_per_s"], 0)
        held = {(i["peer"], i["sessions"]): i["held"] for i in result["idle_sessions"]}
        for peer in peers:
            self.assertEqual(held.get((peer, 100)), 100, held)   # bench.py IDLE_SESSIONS_SMOKE
        delays = {(d["rule"], d["sessions"]): d for d in result["delay_accuracy"]}
        self.assertEqual(sorted(delays), sorted((rule, n) for rule in ("bench-data-end-delay", "bench-rcpt-delay")
                                                for n in (1, 10)))
        for d in delays.values():
            self.assertEqual(d["samples"], 30, d)
            self.assertGreaterEqual(d["late_us_min"], 0, d)   # a delay never fires early


if __name__ == "__main__":
    unittest.main()
