"""The admin API of a running mailtap (admin/README.md): sessions appear after swaks sends
mail, a fault added over the API hits the next message and its counter moves, reset clears it,
/metrics moves with traffic and passes `promtool check metrics` and python3-prometheus-client's
parser, bad requests get the right status and a one-line JSON error, and the CLI clients
(`mailtap faults ...`, `mailtap sessions list`) drive it with their exit codes. With a token,
every request needs it (401 without), the CLI sends it, and an admin address other than
loopback needs one, at start and at reload.

Assertions are on HTTP statuses, JSON documents, metric values, SMTP replies and captures --
never on log text.
"""

import base64
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

from harness import (IntegrationTest, LOOPBACK, SCENARIOS_DIR, Capture, SmtpClient, capture_paths, free_port,
                     mailtap_bin, own_interface_address, wait_until)

PROMTOOL = "/usr/bin/promtool"
TO = "a@example.com"
FULL_TOML = '[[fault]]\nname = "full"\ntype = "reply"\nphase = "rcpt"\ncode = 452\nenhanced = "4.2.2"\ntext = "Mailbox full"\n'


class EventSocket:
    """A minimal RFC 6455 client: the upgrade, then the server's text messages (unmasked,
    unfragmented, as mailtap sends them)."""

    def __init__(self, port, origin=None, timeout=20, target="/api/v1/events", headers=None, address=LOOPBACK):
        self.sock = socket.create_connection((address, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        head = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                % (target, address, port, key))
        if origin:
            head += "Origin: %s\r\n" % origin
        for name, value in (headers or {}).items():
            head += "%s: %s\r\n" % (name, value)
        self.sock.sendall((head + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else 0
        self.headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.body = self.buf

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise AssertionError("no WebSocket message in time")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("WebSocket closed")
            self.buf += chunk

    def message(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            self._need(2, deadline)
            opcode, length = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            at = 2
            if length == 126:
                self._need(4, deadline)
                length, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif length == 127:
                self._need(10, deadline)
                length, at = int.from_bytes(self.buf[2:10], "big"), 10
            self._need(at + length, deadline)
            payload, self.buf = self.buf[at:at + length], self.buf[at + length:]
            if opcode == 1:
                return json.loads(payload)

    def messages_until(self, predicate, timeout=20.0):
        got = []
        deadline = time.monotonic() + timeout
        while not got or not predicate(got[-1]):
            got.append(self.message(max(0.1, deadline - time.monotonic())))
        return got

    def close(self):
        self.sock.close()


class AdminTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.relay = self.start_mailtap()
        self.admin = self.relay.admin_port()

    def request(self, method, path, body=None, content_type=None, headers=None):
        """(status, headers dict lower-case, body bytes) of one request."""
        conn = http.client.HTTPConnection(LOOPBACK, self.admin, timeout=20)
        try:
            h = dict(headers or {})
            if content_type:
                h["Content-Type"] = content_type
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get_json(self, path, status=200):
        code, _, body = self.request("GET", path)
        self.assertEqual(code, status, body)
        return json.loads(body)

    def assertOneLineError(self, status, body, expected_status):
        self.assertEqual(status, expected_status, body)
        self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, body)
        doc = json.loads(body)
        self.assertEqual(doc["status"], expected_status)
        self.assertIsInstance(doc["error"], str)
        self.assertTrue(doc["error"])
        return doc["error"]

    def metrics(self):
        code, headers, body = self.request("GET", "/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"), headers)
        return body.decode("utf-8")

    def sample(self, text, name, **labels):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def raw_exchange(self, request):
        with socket.create_connection((LOOPBACK, self.admin), timeout=30) as s:
            s.sendall(request)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply

    def cli(self, *args, stdin=None):
        r = subprocess.run([mailtap_bin(), *args, "--admin", "%s:%d" % (LOOPBACK, self.admin)],
                           input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        return r.returncode, r.stdout.decode(), r.stderr.decode()


class Health(AdminTest):

    def test_healthz_and_readyz_answer_while_the_relay_listens(self):
        self.assertEqual(self.get_json("/healthz"), {"status": "ok"})
        self.assertEqual(self.get_json("/readyz"), {"status": "ready"})

    def test_readyz_is_503_while_the_relay_drains(self):
        # A transaction in progress holds the drain open (README: in-flight transactions finish).
        c = SmtpClient(self.relay.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.command("EHLO busy.test").code, 250)
        self.assertEqual(c.command("MAIL FROM:<a@example.test>").code, 250)
        self.relay.signal(signal.SIGTERM)
        wait_until(lambda: self.request("GET", "/readyz")[0] == 503, 20, "readyz 503 while draining")
        code, _, body = self.request("GET", "/readyz")
        self.assertOneLineError(code, body, 503)
        self.assertEqual(self.get_json("/healthz"), {"status": "ok"})   # alive all the same

    def test_the_openapi_document_is_served(self):
        doc = self.get_json("/api/v1/openapi.json")
        self.assertEqual(doc["openapi"], "3.0.3")
        self.assertIn("/api/v1/faults/reset", doc["paths"])


class Sessions(AdminTest):

    def test_sessions_appear_newest_first_with_show_json_and_raw_download(self):
        code, out = self.swaks(self.relay.port, "--to", TO)
        self.assertEqual(code, 0, out)
        code, out = self.swaks(self.relay.port, "--to", "b@example.com", "--quit-after", "RCPT")
        self.assertEqual(code, 0, out)
        self.relay.wait_captures(2)
        page = self.get_json("/api/v1/sessions")
        self.assertEqual(len(page["sessions"]), 2, page)
        newest, oldest = page["sessions"]
        self.assertGreater(newest["id"], oldest["id"])
        self.assertEqual(oldest["outcome"], "delivered")
        self.assertEqual(newest["outcome"], "aborted")
        self.assertTrue(oldest["client"].startswith("127.0.0.1:"))
        # Paging and the outcome filter.
        one = self.get_json("/api/v1/sessions?limit=1&offset=1")
        self.assertEqual([s["id"] for s in one["sessions"]], [oldest["id"]])
        self.assertFalse(one["more"])
        delivered = self.get_json("/api/v1/sessions?outcome=delivered")
        self.assertEqual([s["id"] for s in delivered["sessions"]], [oldest["id"]])
        # One session: the `show --json` document.
        shown = self.get_json("/api/v1/sessions/" + oldest["id"])
        self.assertEqual(shown["id"], oldest["id"])
        self.assertEqual(shown["transactions"][0]["rcpt_to"], [TO])
        # The raw capture, as an attachment that is never sniffed.
        code, headers, body = self.request("GET", "/api/v1/sessions/%s/raw" % oldest["id"])
        self.assertEqual(code, 200)
        self.assertIn("attachment", headers["content-disposition"])
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        with open(os.path.join(self.relay.captures, oldest["id"] + ".jsonl"), "rb") as f:
            self.assertEqual(body, f.read())
        # HEAD: GET's header, from the file's size (the capture is not read).
        head = self.raw_exchange(b"HEAD /api/v1/sessions/%s/raw HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                                 % oldest["id"].encode())
        self.assertTrue(head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head[:300])
        self.assertIn(b"Content-Length: %d\r\n" % len(body), head)
        self.assertIn(headers["content-disposition"].encode(), head)
        code, _, body = self.request("GET", "/api/v1/sessions/nope-000")
        self.assertOneLineError(code, body, 404)

    def test_a_session_in_progress_has_one_outcome_in_the_list_and_in_its_document(self):
        # A newcomer's trial: the list said "none", the session's own document "aborted".
        c = SmtpClient(self.relay.port)
        self.addCleanup(c.close)
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.command("EHLO busy.test").code, 250)
        self.assertEqual(c.command("MAIL FROM:<a@example.test>").code, 250)
        self.assertEqual(c.command("RCPT TO:<%s>" % TO).code, 250)
        rows = lambda: self.get_json("/api/v1/sessions")["sessions"]
        # Its RCPT recorded (the writer's next tick), so the list has a transaction to leave out.
        wait_until(lambda: len(rows()) == 1 and rows()[0]["recipients"] == [TO], 20, "the session in progress listed")
        row = rows()[0]
        self.assertIsNone(row["end_reason"])
        self.assertTrue(row["in_progress"])
        self.assertEqual(row["outcome"], "none")
        shown = self.get_json("/api/v1/sessions/" + row["id"])
        self.assertEqual(shown["outcome"], row["outcome"])
        self.assertTrue(shown["in_progress"])

    def test_a_session_cut_short_by_a_crash_is_not_in_progress(self):
        # A hostile trial: a relay killed after a message's end went upstream left a capture
        # that the API called in progress, outcome "none", for ever; show says "unknown" (it may
        # have been delivered). The relay running now does not have it open.
        golden = os.path.join(os.path.dirname(__file__), "..", "golden", "show_basic.jsonl")
        with open(golden, encoding="utf-8") as f:
            lines = f.read().splitlines(True)
        cut = next(i for i, l in enumerate(lines) if '"name":"body"' in l) + 1   # the dot went, no reply
        header = json.loads(lines[0])
        name = "20261205-200000-0a1b2c3d-000001"
        header["session"] = name
        with open(os.path.join(self.relay.captures, name + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n" + "".join(lines[1:cut]))
        rows = [r for r in self.get_json("/api/v1/sessions")["sessions"] if r["id"] == name]
        self.assertEqual(len(rows), 1)
        self.assertIsNone(rows[0]["end_reason"])
        self.assertFalse(rows[0]["in_progress"])   # the web UI says "cut short", not "in progress"
        self.assertEqual(rows[0]["outcome"], "unknown")
        shown = self.get_json("/api/v1/sessions/" + name)
        self.assertEqual(shown["outcome"], "unknown")
        self.assertFalse(shown["in_progress"])
        self.assertEqual([r["id"] for r in self.get_json("/api/v1/sessions?outcome=unknown")["sessions"]], [name])

    def test_an_unreadable_capture_is_listed_unreadable_with_why_and_its_document_is_422(self):
        # A tester's trial: a capture whose started_at was "9999999-99-99" was served with that
        # string as its start. The reader refuses it: the list says "unreadable" and why (one
        # line naming the field), the outcome filter finds it, its document is a 422.
        golden = os.path.join(os.path.dirname(__file__), "..", "golden", "show_basic.jsonl")
        with open(golden, encoding="utf-8") as f:
            lines = f.read().splitlines(True)
        name = "20261206-000000-aaaaaaaa-000002"
        header = dict(json.loads(lines[0]), session=name, started_at="9999999-99-99")
        with open(os.path.join(self.relay.captures, name + ".jsonl"), "w", encoding="utf-8") as f:
            f.write(json.dumps(header) + "\n" + "".join(lines[1:]))
        for query in ("", "?outcome=unreadable"):
            rows = [r for r in self.get_json("/api/v1/sessions" + query)["sessions"] if r["id"] == name]
            self.assertEqual(len(rows), 1, query)
            self.assertEqual(rows[0]["outcome"], "unreadable")
            self.assertEqual(rows[0]["started_at"], "")   # not the string the file holds
            self.assertIn('header record: field "started_at" is not an RFC 3339 time', rows[0]["error"])
            self.assertNotIn("\n", rows[0]["error"])
        code, _, body = self.request("GET", "/api/v1/sessions/" + name)
        self.assertIn('field "started_at"', self.assertOneLineError(code, body, 422))
        code, _, body = self.request("GET", "/api/v1/sessions?outcome=bogus")
        self.assertIn("unreadable", self.assertOneLineError(code, body, 400))
        # The CLI takes every outcome the API does (its --outcome refused "unreadable", and its
        # help and error listed the outcomes without it).
        code, out, err = self.cli("sessions", "list", "--outcome", "unreadable", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual([(r["id"], r["outcome"]) for r in json.loads(out)["sessions"]], [(name, "unreadable")])
        code, out, err = self.cli("sessions", "list", "--help")
        self.assertEqual(code, 0, err)
        help_line = " ".join(out.split()[out.split().index("--outcome"):])
        self.assertIn("unknown, unreadable", help_line)
        code, out, err = self.cli("sessions", "list", "--outcome", "bogus")
        self.assertEqual(code, 2, (out, err))
        self.assertIn("unreadable", err)

    def test_sessions_list_cli(self):
        self.swaks(self.relay.port, "--to", TO)
        self.relay.wait_captures(1)
        code, out, err = self.cli("sessions", "list", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["sessions"][0]["outcome"], "delivered")
        code, out, err = self.cli("sessions", "list")
        self.assertEqual(code, 0, err)
        self.assertIn("delivered", out)
        code, out, err = self.cli("sessions", "list", "--outcome", "bogus")
        self.assertEqual(code, 2, (out, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        # A newcomer trial: it named the HTTP query ("query 'outcome'") and no valid value.
        self.assertIn("--outcome", err)
        self.assertIn("delivered", err)


    # A QA trial: every new session was listed "unreadable" (its capture empty until the header
    # record left its buffer at the writer's tick) and its document was a 422. A destination
    # that never greets holds each session at its start; polled at once, the session is in
    # progress, never unreadable.
    def test_a_session_just_opened_is_in_progress_never_unreadable(self):
        silent = socket.socket()
        silent.bind((LOOPBACK, 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        relay = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, silent.getsockname()[1]), name="silent-upstream")
        self.admin = relay.admin_port()
        seen = []
        for _ in range(5):
            # The sessions listed before this round's connect, which may have ended by now.
            earlier = {r["id"] for r in self.get_json("/api/v1/sessions?limit=500")["sessions"]}
            client = socket.create_connection((LOOPBACK, relay.port), timeout=10)
            dialled, _ = silent.accept()   # the relay has dialled: its session is opening
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                rows = self.get_json("/api/v1/sessions?limit=1")["sessions"]
                if not rows or rows[0]["id"] in earlier:
                    continue
                row = rows[0]
                seen.append(row["started_at"] == "")
                self.assertNotEqual(row["outcome"], "unreadable", row)
                self.assertTrue(row["in_progress"], row)
                self.get_json("/api/v1/sessions/" + row["id"])   # 200, not 422
            client.close()
            dialled.close()
        self.assertTrue(seen, "no listing saw a session")

class Faults(AdminTest):

    def test_a_fault_added_over_the_api_hits_the_next_message_and_reset_clears_it(self):
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML, "application/toml")
        self.assertEqual(code, 201, body)
        self.assertEqual(json.loads(body), {"added": ["full"]})
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertNotEqual(rc, 0)
        self.assertIn("452 4.2.2 Mailbox full", out)
        counters = self.get_json("/api/v1/faults/counters")["counters"]
        self.assertEqual(counters, [{"rule": "full", "type": "reply", "count": 1}])
        self.assertEqual(self.sample(self.metrics(), "mailtap_faults_injected_total", rule="full", type="reply"), 1.0)
        listed = self.get_json("/api/v1/faults")["faults"]
        self.assertEqual([(f["name"], f["injected"], f["phases"]) for f in listed], [("full", 1, ["rcpt"])])
        code, _, body = self.request("POST", "/api/v1/faults/reset")
        self.assertEqual(code, 200, body)
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])
        self.assertEqual(self.get_json("/api/v1/faults/counters")["counters"], [])
        # A Prometheus counter keeps its series and its count (a newcomer's trial: the reset
        # removed it), and the rule loaded again counts on from there.
        self.assertEqual(self.sample(self.metrics(), "mailtap_faults_injected_total", rule="full", type="reply"), 1.0)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertEqual(rc, 0, out)
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML, "application/toml")
        self.assertEqual(code, 201, body)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertIn("452 4.2.2 Mailbox full", out)
        self.assertEqual(self.get_json("/api/v1/faults/counters")["counters"], [{"rule": "full", "type": "reply", "count": 1}])
        self.assertEqual(self.sample(self.metrics(), "mailtap_faults_injected_total", rule="full", type="reply"), 2.0)

    def test_json_rules_and_remove(self):
        rule = {"name": "nope", "type": "reply", "phase": "mail", "code": 550, "enhanced": "5.7.1", "text": "No"}
        code, _, body = self.request("POST", "/api/v1/faults", json.dumps(rule), "application/json")
        self.assertEqual(code, 201, body)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertIn("550 5.7.1 No", out)
        code, _, body = self.request("DELETE", "/api/v1/faults/nope")
        self.assertEqual((code, json.loads(body)), (200, {"removed": "nope"}))
        code, _, body = self.request("DELETE", "/api/v1/faults/nope")
        self.assertOneLineError(code, body, 404)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertEqual(rc, 0, out)

    def test_a_name_already_armed_is_409_saying_so_and_how_to_remove_it(self):
        # A newcomer's trial: the 409 read "request:21: key 'name': duplicate rule name
        # 'mailbox-full' (first at line 20)", as if the request held the name twice.
        path = os.path.join(SCENARIOS_DIR, "mailbox-full.toml")
        with open(path, "rb") as f:
            scenario = f.read()
        code, _, body = self.request("POST", "/api/v1/faults", scenario, "application/toml")
        self.assertEqual(code, 201, body)
        code, _, body = self.request("POST", "/api/v1/faults", scenario, "application/toml")
        self.assertEqual(self.assertOneLineError(code, body, 409),
                         "rule 'mailbox-full' is already armed (remove it first: DELETE /api/v1/faults/mailbox-full, "
                         "or mailtap faults remove mailbox-full)")
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": path}), "application/json")
        self.assertIn("rule 'mailbox-full' is already armed", self.assertOneLineError(code, body, 409))
        code, out, err = self.cli("faults", "add", path)
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(err, "mailtap faults add: rule 'mailbox-full' is already armed (remove it first: "
                              "DELETE /api/v1/faults/mailbox-full, or mailtap faults remove mailbox-full)\n")
        # A name twice within one request keeps the loader's message, naming both lines.
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML + FULL_TOML, "application/toml")
        self.assertEqual(self.assertOneLineError(code, body, 400),
                         "request:9: key 'name': duplicate rule name 'full' (first at line 1)")
        self.assertEqual([f["name"] for f in self.get_json("/api/v1/faults")["faults"]], ["mailbox-full"])

    def test_a_reload_removes_the_rules_armed_over_the_api_and_counts_them(self):
        # A newcomer's trial: SIGHUP dropped API-armed rules and said nothing of it.
        relay = self.start_mailtap(args=("--scenario", os.path.join(SCENARIOS_DIR, "mailbox-full.toml")),
                                   name="scenario-relay")
        admin = relay.admin_port()

        def call(method, path, body=None, content_type=None):
            conn = http.client.HTTPConnection(LOOPBACK, admin, timeout=20)
            try:
                conn.request(method, path, body=body, headers={"Content-Type": content_type} if content_type else {})
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()

        def faults():
            code, body = call("GET", "/api/v1/faults")
            self.assertEqual(code, 200, body)
            return [(f["name"], f["source"]) for f in json.loads(body)["faults"]]

        def metric(name, **labels):
            code, body = call("GET", "/metrics")
            self.assertEqual(code, 200, body)
            return self.sample(body.decode(), name, **labels)

        code, body = call("POST", "/api/v1/faults", json.dumps([
            {"name": "api-rule", "type": "reply", "phase": "mail", "code": 451},
            {"name": "api-rule-2", "type": "reply", "phase": "rcpt", "code": 451}]), "application/json")
        self.assertEqual(code, 201, body)
        self.assertEqual(faults(), [("mailbox-full", "config"), ("api-rule", "api"), ("api-rule-2", "api")])
        self.assertEqual(metric("mailtap_reload_removed_api_rules_total"), 0.0)
        for reloads in (1, 2):   # the second reload has nothing armed over the API to remove
            relay.signal(signal.SIGHUP)
            wait_until(lambda: metric("mailtap_reloads_total", result="ok") == reloads, 20, "reload %d" % reloads)
            self.assertEqual(faults(), [("mailbox-full", "config")])
            self.assertEqual(metric("mailtap_reload_removed_api_rules_total"), 2.0)
        rc, out = self.swaks(relay.port, "--to", TO)   # api-rule is gone: MAIL is not answered 451
        self.assertIn("552 5.2.2", out)
        self.assertNotIn("** 451", out)

    def test_a_scenario_file_loads_by_path(self):
        path = os.path.join(SCENARIOS_DIR, "mailbox-full.toml")
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": path}), "application/json")
        self.assertEqual(code, 201, body)
        self.assertEqual(json.loads(body)["added"], ["mailbox-full"])
        rc, out = self.swaks(self.relay.port, "--to", "a@example.com")
        self.assertIn("552 5.2.2", out)
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": "/nonexistent.toml"}),
                                     "application/json")
        self.assertIn("/nonexistent.toml", self.assertOneLineError(code, body, 400))
        # A named pipe (a hostile trial): open(2) waited for a writer and held an admin worker,
        # two of them the whole API, and SIGTERM waited on them. Refused at once.
        fifo = os.path.join(self.workdir, "fifo.toml")
        os.mkfifo(fifo)
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": fifo}), "application/json")
        self.assertIn("not a regular file", self.assertOneLineError(code, body, 400))

    def test_a_relative_scenario_path_names_the_relays_working_directory(self):
        # A newcomer's trial: {"path": "policies/scenarios/greylisting.toml"} (as README's tour
        # names it) said only "cannot open the scenario file: No such file or directory"; the
        # path was taken from the relay's working directory, which the caller may not know.
        code, _, body = self.request("POST", "/api/v1/scenarios",
                                     json.dumps({"path": "policies/scenarios/greylisting.toml"}), "application/json")
        error = self.assertOneLineError(code, body, 400)
        self.assertIn("cannot open the scenario file", error)
        cwd = os.readlink("/proc/%d/cwd" % self.relay.proc.pid)
        self.assertIn("(a relative path is taken from the relay's working directory, %s)" % cwd, error)
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": "/nonexistent.toml"}),
                                     "application/json")
        self.assertNotIn("relative path", self.assertOneLineError(code, body, 400))

    def test_a_scenario_path_with_a_nul_is_refused_and_nothing_is_armed(self):
        # A hostile trial: "DIR/sc.toml\u0000junk" loaded DIR/sc.toml (open(2) reads a path up to
        # its NUL) while the reply and the log named the whole string.
        path = self.write_file("sc.toml", FULL_TOML.encode())
        for tail in ("\0junk", "\njunk"):
            code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": path + tail}),
                                         "application/json")
            error = self.assertOneLineError(code, body, 400)
            self.assertIn("key 'path': a control character, U+00", error)
            self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": path}), "application/json")
        self.assertEqual(code, 201, body)
        self.assertEqual(json.loads(body), {"added": ["full"], "file": path})

    def test_a_scenario_files_error_escapes_bidirectional_controls(self):
        # A hostile trial: the 400's error echoed the file's U+202E raw (config errors escaped
        # it, scenario files did not); `mailtap faults add` prints it on a terminal.
        path = self.write_file("bidi.toml", b'[[fault]]\nname = "d"\ntype = "delay"\nphase = "mail"\n'
                                            b'delay = "5\xe2\x80\xaes"\n')
        code, _, body = self.request("POST", "/api/v1/scenarios", json.dumps({"path": path}), "application/json")
        error = self.assertOneLineError(code, body, 400)
        self.assertIn("%s:5: key 'delay'" % path, error)
        self.assertIn("'5\\xe2\\x80\\xaes'", error)
        self.assertNotIn("\u202e", error)

    def test_the_cli_lists_long_rule_names_in_aligned_columns(self):
        # A newcomer's trial: the cisco profile's names and phases ran into the next column.
        code, out, err = self.cli("faults", "add", os.path.join(SCENARIOS_DIR, "cisco-pix-fixup.toml"))
        self.assertEqual(code, 0, err)
        code, out, err = self.cli("faults", "list")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 4, out)   # the header and three rules
        for word in ("TYPE", "PHASES", "INJECTED"):
            column = lines[0].index(word)
            for line in lines[1:]:
                self.assertEqual(line[column - 1], " ", (word, line))   # the cell before ends before it
        injected_end = lines[0].index("INJECTED") + len("INJECTED") - 1
        self.assertTrue(all(line[injected_end] == "0" for line in lines[1:]), out)   # counts right-aligned under it
        self.assertTrue(all(len(line) == len(lines[0]) for line in lines), out)

    def test_the_cli_adds_lists_removes_and_resets(self):
        rules = os.path.join(self.workdir, "full.toml")
        with open(rules, "w") as f:
            f.write(FULL_TOML)
        code, out, err = self.cli("faults", "add", rules)
        self.assertEqual((code, out), (0, "added full\n"), err)
        code, out, err = self.cli("faults", "add", rules)   # the name is taken
        self.assertEqual(code, 1, (out, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        rc, _ = self.swaks(self.relay.port, "--to", TO)
        code, out, err = self.cli("faults", "list", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)["faults"][0]["injected"], 1)
        # The URL the relay's ready line prints works as --admin too (a newcomer's trial: "IPv6
        # address must be in brackets").
        r = subprocess.run([mailtap_bin(), "faults", "list", "--json", "--admin", "http://%s:%d/" % (LOOPBACK, self.admin)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["faults"][0]["name"], "full")
        code, out, err = self.cli("faults", "remove", "full")
        self.assertEqual((code, out), (0, "removed full\n"), err)
        code, out, err = self.cli("faults", "remove", "full")
        self.assertEqual(code, 1, (out, err))
        bad = os.path.join(self.workdir, "bad.toml")
        with open(bad, "w") as f:
            f.write(FULL_TOML.replace("452", "999"))
        code, out, err = self.cli("faults", "add", bad)
        self.assertEqual(code, 2, (out, err))
        # Its line in the file, by the file's name (a newcomer's trial: "request:5").
        self.assertEqual(err, "mailtap faults add: %s:5: key 'code': expected an integer from 200 to 599, got 999\n" % bad)
        code, out, err = self.cli("faults", "add", "-", stdin=json.dumps({"name": "r", "type": "reset", "phase": "mail"}).encode())
        self.assertEqual((code, out), (0, "added r\n"), err)
        code, out, err = self.cli("faults", "reset")
        self.assertEqual((code, out), (0, "reset: 1 rule(s) removed\n"), err)

    def test_the_cli_names_a_rule_file_it_cannot_send(self):
        # A fourth trial: a directory aborted the CLI (exit 134, an uncaught ios_failure), and
        # a file past the API's body limit read "cannot reach the admin API: Broken pipe".
        code, out, err = self.cli("faults", "add", self.workdir)
        self.assertEqual((code, out, err), (2, "", "mailtap faults add: %s: Is a directory\n" % self.workdir))
        huge = os.path.join(self.workdir, "huge.toml")
        with open(huge, "w") as f:
            f.write("#" * (300 * 1024))
        code, out, err = self.cli("faults", "add", huge)
        self.assertEqual((code, out, err), (2, "", "mailtap faults add: %s: file larger than 262144 bytes\n" % huge))
        code, out, err = self.cli("faults", "add", "-", stdin=b"#" * (300 * 1024))
        self.assertEqual((code, out, err), (2, "", "mailtap faults add: -: larger than 262144 bytes\n"))
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])

    def test_the_admin_flag_wins_over_the_environment_in_every_subcommand(self):
        # A fourth trial: with $MAILTAP_ADMIN set, `faults list --admin OTHER` talked to
        # $MAILTAP_ADMIN's relay (the subcommands shared their options, and CLI11 filled them
        # from the environment of those not given), so a CI job could reset another relay's rules.
        env = dict(os.environ, MAILTAP_ADMIN="%s:%d" % (LOOPBACK, self.admin))
        for args in (["faults", "list"], ["faults", "reset"], ["faults", "remove", "x"], ["sessions", "list"]):
            r = subprocess.run([mailtap_bin(), *args, "--admin", "127.0.0.1:1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
            self.assertEqual(r.returncode, 1, (args, r.stdout, r.stderr))
            self.assertIn(b"127.0.0.1:1", r.stderr, args)
        rules = os.path.join(self.workdir, "full.toml")
        with open(rules, "w") as f:
            f.write(FULL_TOML)
        r = subprocess.run([mailtap_bin(), "faults", "add", rules, "--admin", "127.0.0.1:1"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])
        # Without the flag, the environment is used.
        r = subprocess.run([mailtap_bin(), "faults", "add", rules], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, b"added full\n"), r.stderr)

    def test_the_cli_without_a_relay_exits_1(self):
        r = subprocess.run([mailtap_bin(), "faults", "list", "--admin", "127.0.0.1:1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)


class Metrics(AdminTest):

    def test_metrics_move_with_traffic_and_pass_promtool(self):
        before = self.metrics()
        self.assertEqual(self.sample(before, "mailtap_sessions_total"), 0.0)
        for _ in range(2):
            rc, out = self.swaks(self.relay.port, "--to", TO)
            self.assertEqual(rc, 0, out)
        self.relay.wait_captures(2)
        wait_until(lambda: self.sample(self.metrics(), "mailtap_sessions_active") == 0.0, 20, "sessions closed")
        after = self.metrics()
        self.assertEqual(self.sample(after, "mailtap_sessions_total"), 2.0)
        self.assertEqual(self.sample(after, "mailtap_messages_delivered_total"), 2.0)
        self.assertEqual(self.sample(after, "mailtap_replies_total", stage="rcpt", **{"class": "2xx"}), 2.0)
        self.assertEqual(self.sample(after, "mailtap_replies_total", stage="data", **{"class": "3xx"}), 2.0)
        self.assertEqual(self.sample(after, "mailtap_stage_duration_seconds_count", stage="data_end"), 2.0)
        self.assertEqual(self.sample(after, "mailtap_stage_upstream_seconds_count", stage="rcpt"), 2.0)
        self.assertEqual(self.sample(after, "mailtap_stage_relay_seconds_bucket", stage="rcpt", le="+Inf"), 2.0)
        self.assertGreater(self.sample(after, "mailtap_capture_bytes_written_total"), 0.0)
        self.assertEqual(self.sample(after, "mailtap_captures_total", result="complete"), 2.0)
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=after.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode())

    def test_tls_handshakes_are_counted_by_leg(self):
        rc, out = self.swaks(self.relay.port, "--to", TO, "--tls")
        self.assertEqual(rc, 0, out)
        self.relay.wait_captures(1)
        text = self.metrics()
        wait_until(lambda: self.sample(self.metrics(), "mailtap_sessions_active") == 0.0, 20, "session closed")
        text = self.metrics()
        self.assertEqual(self.sample(text, "mailtap_tls_handshakes_total", leg="client"), 1.0)
        self.assertEqual(self.sample(text, "mailtap_tls_handshakes_total", leg="upstream"), 1.0)
        self.assertEqual(self.sample(text, "mailtap_stage_duration_seconds_count", stage="tls"), 2.0)


class Events(AdminTest):

    def test_a_subscriber_sees_a_session_start_its_stages_a_fault_and_its_end(self):
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML, "application/toml")
        self.assertEqual(code, 201, body)
        ws = EventSocket(self.admin)
        self.addCleanup(ws.close)
        self.assertEqual(ws.status, 101)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertIn("452 4.2.2", out)
        events = ws.messages_until(lambda e: e["type"] == "session_ended")
        session = events[0]["session"]
        self.assertEqual(events[0]["type"], "session_started")
        self.assertTrue(events[0]["client"].startswith("127.0.0.1:"))
        self.assertTrue(all(e["session"] == session for e in events))
        stages = [e["stage"] for e in events if e["type"] == "stage"]
        self.assertIn("banner", stages)
        self.assertIn("rcpt", stages)
        faults = [e for e in events if e["type"] == "fault"]
        self.assertEqual([(f["rule"], f["fault_type"], f["stage"]) for f in faults], [("full", "reply", "rcpt")])
        rcpt = [e for e in events if e["type"] == "stage" and e["stage"] == "rcpt"]
        self.assertEqual(rcpt[0]["reply_class"], 4)
        self.assertEqual(events[-1]["reason"], "client_quit")

    def test_a_foreign_origin_is_403_and_a_plain_get_is_426(self):
        ws = EventSocket(self.admin, origin="http://evil.example")
        self.addCleanup(ws.close)
        self.assertEqual(ws.status, 403)
        ok = EventSocket(self.admin, origin="http://localhost:%d" % self.admin)
        self.addCleanup(ok.close)
        self.assertEqual(ok.status, 101)
        code, _, body = self.request("GET", "/api/v1/events")
        self.assertOneLineError(code, body, 426)


class BadRequests(AdminTest):

    def test_unknown_route_is_404_and_a_mutation_by_get_is_405(self):
        code, _, body = self.request("GET", "/api/v1/nothing")
        self.assertOneLineError(code, body, 404)
        code, headers, body = self.request("GET", "/api/v1/faults/reset")
        self.assertOneLineError(code, body, 405)
        self.assertIn("POST", headers["allow"])

    def test_bad_json_bad_toml_and_wrong_content_type_are_refused(self):
        code, _, body = self.request("POST", "/api/v1/faults", "{bad", "application/json")
        self.assertIn("not JSON", self.assertOneLineError(code, body, 400))
        code, _, body = self.request("POST", "/api/v1/faults", "[[fault]\nname = ", "application/toml")
        self.assertTrue(self.assertOneLineError(code, body, 400).startswith("request:1:"))
        code, _, body = self.request("POST", "/api/v1/faults", "name=x", "application/x-www-form-urlencoded")
        self.assertOneLineError(code, body, 415)
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])

    def test_a_key_nested_too_deep_is_400_and_the_relay_lives(self):
        # A hostile trial: a dotted key of 40,000 parts (80 KB, under the body cap) overflowed
        # the parser's stack and killed the relay with every session in it; a table header the same.
        deep = ".".join(["a"] * 40000)
        for body in (deep + " = 1\n", "[" + deep + "]\n"):
            code, _, reply = self.request("POST", "/api/v1/faults", body, "application/toml")
            self.assertEqual(self.assertOneLineError(code, reply, 400),
                             "request:1: more than 1000 dots outside strings in one line: a key or table nested "
                             "that deep is refused")
        self.assertEqual(self.get_json("/healthz"), {"status": "ok"})
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])

    def test_an_empty_json_array_of_rules_says_so_in_jsons_terms(self):
        # A tester's trial: POST [] said "expected [[fault]] tables (an array of tables)", words for
        # TOML a JSON body has none of.
        for body, what in (("[]", "the array is empty"), ('{"fault": []}', "'fault' is an empty array")):
            code, _, reply = self.request("POST", "/api/v1/faults", body, "application/json")
            error = self.assertOneLineError(code, reply, 400)
            self.assertEqual(error, "request (JSON): no rule in the body: %s (expected one or more rules, each an "
                                    "object)" % what)
        # Past the cap: "more than 1000 [[fault]] tables" before, TOML's words again.
        many = json.dumps([{"name": "r%d" % i, "type": "reset", "phase": "mail"} for i in range(1001)])
        code, _, reply = self.request("POST", "/api/v1/faults", many, "application/json")
        self.assertEqual(self.assertOneLineError(code, reply, 400), "request (JSON): more than 1000 rules in one request")
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])

    def test_an_oversized_body_is_413(self):
        code, _, body = self.request("POST", "/api/v1/faults", "#" * (300 * 1024), "application/toml")
        self.assertOneLineError(code, body, 413)

    def test_oversized_headers_are_431_and_garbage_is_400(self):
        code, _, body = self.request("GET", "/healthz", headers={"X-Big": "a" * (16 * 1024)})
        self.assertOneLineError(code, body, 431)
        with socket.create_connection((LOOPBACK, self.admin), timeout=20) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertEqual(self.get_json("/healthz"), {"status": "ok"})   # still serving

    def test_a_foreign_host_is_403(self):
        code, _, body = self.request("GET", "/api/v1/faults", headers={"Host": "evil.example"})
        self.assertOneLineError(code, body, 403)

    def test_head_answers_with_gets_header_and_no_body(self):
        # RFC 9110 9.3.2: a hostile trial's HEAD /healthz got 405.
        for path in ("/healthz", "/api/v1/faults", "/"):
            get = self.raw_exchange(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                                    % path.encode())
            head = self.raw_exchange(b"HEAD %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                                     % path.encode())
            get_header, get_body = get.split(b"\r\n\r\n", 1)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:200])
            self.assertTrue(head.endswith(b"\r\n\r\n"), head[-200:])   # the header, nothing after it
            self.assertIn(b"Content-Length: %d\r\n" % len(get_body), head)
            self.assertGreater(len(get_body), 0)
        code, headers, body = self.request("HEAD", "/api/v1/faults/reset")
        self.assertEqual(code, 405)
        self.assertIn("POST", headers["allow"])
        self.assertNotIn("HEAD", headers["allow"])
        code, headers, body = self.request("DELETE", "/api/v1/faults")
        self.assertIn("HEAD", headers["allow"])

    def test_a_request_line_past_the_limit_is_414(self):
        code, _, body = self.request("GET", "/healthz?x=" + "a" * 9000)
        self.assertIn("request line longer", self.assertOneLineError(code, body, 414))

    def test_a_transfer_coding_other_than_chunked_is_501(self):
        # RFC 9112 6.1. Beast decodes chunked only: gzip-then-chunked was read as a body of
        # gzip bytes and refused as bad JSON (400).
        reply = self.raw_exchange(b"POST /api/v1/faults HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Content-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n"
                                  b"Connection: close\r\n\r\n0\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 501 "), reply[:200])
        error = json.loads(reply.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(error["status"], 501)
        self.assertIn("gzip", error["error"])
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])

    def test_a_websocket_handshake_beast_refuses_gets_a_json_error(self):
        reply = self.raw_exchange(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\nSec-WebSocket-Version: 12\r\n"
                                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        header, body = reply.split(b"\r\n\r\n", 1)
        self.assertTrue(header.startswith(b"HTTP/1.1 426 "), header)
        self.assertIn(b"Sec-WebSocket-Version: 13", header)
        self.assertIn(b"Content-Type: application/json", header)
        error = json.loads(body)
        self.assertEqual(error["status"], 426)
        self.assertIn("Sec-WebSocket-Version", error["error"])
        reply = self.raw_exchange(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                                  b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
        header, body = reply.split(b"\r\n\r\n", 1)
        self.assertTrue(header.startswith(b"HTTP/1.1 400 "), header)
        self.assertEqual(json.loads(body)["status"], 400)

    def raw_exchange(self, request):
        """Sends `request` as it is on a connection of its own; everything the server answers."""
        with socket.create_connection((LOOPBACK, self.admin), timeout=30) as s:
            s.sendall(request)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply

    def test_idle_keep_alive_connections_make_room_for_a_new_one(self):
        # A hostile trial: sixteen idle keep-alive connections (the cap) held every slot for
        # the 30 s idle timeout, and every other request got 503. The oldest idle one now
        # closes to make room.
        held = []
        try:
            for _ in range(16):
                conn = http.client.HTTPConnection(LOOPBACK, self.admin, timeout=20)
                conn.request("GET", "/healthz")
                r = conn.getresponse()
                r.read()
                self.assertEqual(r.status, 200)
                held.append(conn)
            for _ in range(3):
                code, _, body = self.request("GET", "/healthz")
                self.assertEqual(code, 200, body)
        finally:
            for conn in held:
                conn.close()

    def trickle(self, count, seconds):
        """`count` connections sending one request's headers a byte every 0.5 s for `seconds`
        (never finished); returns the sockets, open or closed by the relay."""
        request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        held = []
        for _ in range(count):
            s = socket.create_connection((LOOPBACK, self.admin), timeout=5)
            self.addCleanup(s.close)
            s.sendall(request[:1])
            held.append(s)
        for i in range(1, int(seconds / 0.5) + 1):
            time.sleep(0.5)
            for s in held:
                try:
                    s.send(request[i:i + 1])
                except OSError:
                    pass   # closed by the relay to make room
        return held

    def test_requests_trickling_in_make_room_for_a_fast_one(self):
        # A hostile trial (slowloris): twenty connections sending their headers a byte every
        # 0.5 s held all sixteen slots, and /healthz got 503 for their whole 10 s deadline (and
        # again with the next twenty). With none idle, the connection longest in an unfinished
        # request now makes room.
        self.trickle(20, 1.5)
        for _ in range(3):
            started = time.monotonic()
            code, _, body = self.request("GET", "/healthz")
            self.assertEqual(code, 200, body)
            self.assertLess(time.monotonic() - started, 2.0)

    def test_a_request_being_answered_keeps_its_slot_while_trickling_ones_make_room(self):
        # A raw download the client reads slowly is a request read whole and being answered:
        # trickling connections filling every other slot close each other, never it.
        session = "20260101-000000-aaaaaaaa-000001"
        size = 32 * 1024 * 1024
        with open(os.path.join(self.relay.captures, session + ".jsonl"), "wb") as f:
            f.write(b"x" * (size - 1) + b"\n")
        download = socket.create_connection((LOOPBACK, self.admin), timeout=30)
        self.addCleanup(download.close)
        download.sendall(b"GET /api/v1/sessions/%s/raw HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                         % session.encode())
        reply = download.recv(4096)   # the answer has begun: the request was read whole
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), reply[:200])
        self.trickle(20, 1.5)
        code, _, body = self.request("GET", "/healthz")
        self.assertEqual(code, 200, body)
        while chunk := download.recv(1 << 20):
            reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: %d\r\n" % size, head + b"\r\n")
        self.assertEqual(len(body), size)

    def test_two_host_headers_are_400(self):
        # RFC 9112 3.2. The Host check read the first only: an allowed one first was served
        # (a hostile trial).
        reply = self.raw_exchange(b"GET /api/v1/faults HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n"
                                  b"Connection: close\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply[:200])
        self.assertIn(b"more than one Host header", reply)

    def test_two_origin_headers_are_400(self):
        # The Origin check read the first only: an allowed one first let a second, foreign one
        # through to a mutating route (a hostile trial).
        reply = self.raw_exchange(b"POST /api/v1/faults/reset HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Origin: http://127.0.0.1\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n"
                                  b"Connection: close\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply[:200])
        self.assertIn(b"more than one Origin header", reply)

    def test_two_authorization_headers_are_400(self):
        # The token check read the first only, so the order of two decided (a hostile trial).
        reply = self.raw_exchange(b"GET /api/v1/faults HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\n"
                                  b"Authorization: Bearer y\r\nConnection: close\r\n\r\n")
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply[:200])
        self.assertIn(b"more than one Authorization header", reply)

    def test_a_slow_request_is_closed_at_its_deadline_and_the_server_keeps_serving(self):
        with socket.create_connection((LOOPBACK, self.admin), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")   # never finished
            self.assertEqual(self.get_json("/healthz"), {"status": "ok"})
            started = time.monotonic()
            self.assertEqual(s.recv(4096), b"")   # closed by the relay (request_timeout, 10 s)
            self.assertLess(time.monotonic() - started, 20)


TOKEN = "7f3a9c0e5b2d4f6a8c1e3b5d7f9a0c2e"


class Token(AdminTest):
    """A token-protected admin API: every request needs `Authorization: Bearer TOKEN`, the
    events WebSocket takes it as a subprotocol or a query parameter too, and the CLI clients
    send it from --admin-token-file or $MAILTAP_ADMIN_TOKEN."""

    def setUp(self):
        IntegrationTest.setUp(self)
        self.token_file = os.path.join(self.workdir, "admin-token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        self.relay = self.start_mailtap(args=("--admin-token-file", self.token_file, "--admin", "127.0.0.1:0"))
        self.admin = self.relay.admin_port()

    def get_json_with_token(self, path):
        code, _, body = self.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def test_a_request_without_the_token_is_401_and_with_it_is_served(self):
        for path in ("/healthz", "/metrics", "/api/v1/faults", "/api/v1/sessions"):
            code, headers, body = self.request("GET", path)
            self.assertOneLineError(code, body, 401)
            self.assertTrue(headers["www-authenticate"].startswith("Bearer"), headers)
            code, _, body = self.request("GET", path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "0"})
            self.assertOneLineError(code, body, 401)
            code, _, body = self.request("GET", path, headers={"Authorization": "Bearer " + TOKEN})
            self.assertEqual(code, 200, body)
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML, "application/toml")
        self.assertOneLineError(code, body, 401)
        code, _, body = self.request("POST", "/api/v1/faults", FULL_TOML, "application/toml",
                                     headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(code, 201, body)
        rc, out = self.swaks(self.relay.port, "--to", TO)
        self.assertIn("452 4.2.2", out)

    def test_the_web_uis_files_need_no_token_and_what_they_fetch_does(self):
        # The page and its scripts hold no data and a browser's navigation sends no header.
        for path in ("/", "/ui/api.js"):
            code, _, body = self.request("GET", path)
            self.assertEqual(code, 200, body)
        code, _, body = self.request("GET", "/api/v1/sessions")
        self.assertOneLineError(code, body, 401)
        code, _, body = self.request("GET", "/", headers={"Host": "evil.example"})
        self.assertOneLineError(code, body, 403)

    def test_the_events_websocket_takes_the_token_as_header_subprotocol_or_query(self):
        refused = EventSocket(self.admin)
        self.addCleanup(refused.close)
        self.assertEqual(refused.status, 401)
        wrong = EventSocket(self.admin, target="/api/v1/events?token=wrong-token-0123456789")
        self.addCleanup(wrong.close)
        self.assertEqual(wrong.status, 401)
        by_header = EventSocket(self.admin, headers={"Authorization": "Bearer " + TOKEN})
        self.addCleanup(by_header.close)
        self.assertEqual(by_header.status, 101)
        # As a browser does it: the token offered as a subprotocol beside mailtap.events, which
        # the handshake selects (never the token).
        by_protocol = EventSocket(self.admin, origin="http://127.0.0.1:%d" % self.admin,
                                  headers={"Sec-WebSocket-Protocol": "mailtap.events, bearer." + TOKEN})
        self.addCleanup(by_protocol.close)
        self.assertEqual(by_protocol.status, 101)
        self.assertEqual(by_protocol.headers.get("sec-websocket-protocol"), "mailtap.events")
        by_query = EventSocket(self.admin, target="/api/v1/events?token=" + TOKEN)
        self.addCleanup(by_query.close)
        self.assertEqual(by_query.status, 101)
        self.swaks(self.relay.port, "--to", TO)
        for ws in (by_header, by_protocol, by_query):
            self.assertEqual(ws.messages_until(lambda e: e["type"] == "session_ended")[0]["type"], "session_started")

    def test_the_cli_sends_the_token_from_a_file_or_the_environment(self):
        rc, out, err = self.cli("faults", "list")
        self.assertEqual(rc, 1, out)
        self.assertEqual(len(err.splitlines()), 1, err)
        rc, out, err = self.cli("faults", "add", "-", "--admin-token-file", self.token_file, stdin=FULL_TOML.encode())
        self.assertEqual((rc, out), (0, "added full\n"), err)
        r = subprocess.run([mailtap_bin(), "faults", "list", "--json", "--admin", "%s:%d" % (LOOPBACK, self.admin)],
                           env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([f["name"] for f in json.loads(r.stdout)["faults"]], ["full"])
        r = subprocess.run([mailtap_bin(), "sessions", "list", "--admin", "%s:%d" % (LOOPBACK, self.admin)],
                           env=dict(os.environ, MAILTAP_ADMIN_TOKEN_FILE=self.token_file),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        # A token that could not be a header value is refused before anything is sent.
        r = subprocess.run([mailtap_bin(), "faults", "reset", "--admin", "%s:%d" % (LOOPBACK, self.admin)],
                           env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN + "\r\nX-Injected: 1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertNotIn(TOKEN.encode(), r.stderr)
        self.assertEqual([f["name"] for f in self.get_json_with_token("/api/v1/faults")["faults"]], ["full"])


class NonLoopbackAdmin(IntegrationTest):
    """Bound on another address than loopback the admin API needs a token: at start, and at
    each SIGHUP reload (which otherwise keeps running, as with any bad configuration)."""

    def admin_url_port(self, relay):
        line = relay._ready_line(5.0)
        m = re.match(r"^mailtap: admin API on http://0\.0\.0\.0:(\d+)$", line)
        self.assertTrue(m, line)
        return int(m.group(1))

    def get(self, port, path, token=None):
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=20)
        try:
            conn.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def test_without_a_token_it_refuses_to_start_in_one_line(self):
        for env in ({}, {"MAILTAP_ADMIN_TOKEN": ""}):
            r = subprocess.run([mailtap_bin(), "run", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0",
                                "--captures", os.path.join(self.workdir, "caps")],
                               env=dict(os.environ, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
            self.assertIn(b"no admin token", r.stderr)
            self.assertEqual(r.stdout, b"")

    def test_a_bad_token_refuses_to_start_in_one_line_without_repeating_it(self):
        r = subprocess.run([mailtap_bin(), "run", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0",
                            "--captures", os.path.join(self.workdir, "caps")],
                           env=dict(os.environ, MAILTAP_ADMIN_TOKEN="short-secret"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
        self.assertIn(b"$MAILTAP_ADMIN_TOKEN", r.stderr)
        self.assertNotIn(b"short-secret", r.stderr)

    def test_with_a_token_from_the_environment_it_serves_every_address(self):
        relay = self.start_mailtap(args=("--admin", "0.0.0.0:0"), env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN))
        port = self.admin_url_port(relay)
        self.assertEqual(self.get(port, "/healthz")[0], 401)
        self.assertEqual(self.get(port, "/healthz", TOKEN), (200, b'{"status":"ok"}\n'))

    def test_the_names_of_admin_hosts_are_served_and_others_are_still_403(self):
        relay = self.start_mailtap(args=("--admin", "0.0.0.0:0", "--admin-host", "Mailtap.Example.TEST"),
                                   env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN))
        port = self.admin_url_port(relay)
        for host, status in (("mailtap.example.test:%d" % port, 200), ("other.example.test", 403),
                             ("127.0.0.1:%d" % port, 200)):
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=20)
            try:
                conn.request("GET", "/healthz", headers={"Host": host, "Authorization": "Bearer " + TOKEN})
                r = conn.getresponse()
                self.assertEqual(r.status, status, (host, r.read()))
            finally:
                conn.close()

    def test_bound_to_the_wildcard_it_answers_to_the_address_a_request_arrived_on(self):
        # A newcomer's trial: on 0.0.0.0 the host's own IP was 403. 127.0.0.2 is one of this
        # host's addresses that is not among the loopback names, like an interface address.
        relay = self.start_mailtap(args=("--admin", "0.0.0.0:0"), env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN))
        port = self.admin_url_port(relay)
        arrivals = ["127.0.0.2"]
        if own_interface_address() != LOOPBACK:
            arrivals.append(own_interface_address())
        for address in arrivals:
            for host, status in ((address, 200), ("%s:%d" % (address, port), 200),
                                 ("127.0.0.3:%d" % port, 403), ("rebound.example.test", 403)):
                conn = http.client.HTTPConnection(address, port, timeout=20)
                try:
                    conn.request("GET", "/api/v1/faults", headers={"Host": host, "Authorization": "Bearer " + TOKEN})
                    r = conn.getresponse()
                    body = r.read()
                    self.assertEqual(r.status, status, (address, host, body))
                    if status == 403:   # the refusal says how to add a name
                        self.assertIn("--admin-host", json.loads(body)["error"])
                finally:
                    conn.close()
            # A browser's page served from that address opens the events socket with it as
            # its Origin; another origin is still refused (cross-site WebSocket hijacking).
            auth = {"Authorization": "Bearer " + TOKEN}
            for origin, status in (("http://%s:%d" % (address, port), 101),
                                   ("http://127.0.0.3:%d" % port, 403), ("http://rebound.example.test", 403)):
                ws = EventSocket(port, origin=origin, headers=auth, address=address)
                ws.close()
                self.assertEqual(ws.status, status, (address, origin, ws.body))

    def test_bound_to_loopback_another_local_address_in_host_is_still_403(self):
        relay = self.start_mailtap(args=("--admin", "127.0.0.1:0"))
        port = relay.admin_port()
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=20)
        try:
            conn.request("GET", "/healthz", headers={"Host": "127.0.0.2:%d" % port})
            r = conn.getresponse()
            self.assertEqual(r.status, 403, r.read())
        finally:
            conn.close()

    def test_a_reload_that_loses_the_token_fails_and_the_running_api_keeps_serving(self):
        token_file = os.path.join(self.workdir, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)
        conf = os.path.join(self.workdir, "mailtap.toml")
        with open(conf, "w") as f:
            f.write('admin_token_file = "%s"\n' % token_file)
        relay = self.start_mailtap(args=("--config", conf, "--admin", "0.0.0.0:0"))
        port = self.admin_url_port(relay)
        with open(conf, "w") as f:
            f.write("# the token is gone\n")
        relay.signal(signal.SIGHUP)

        def failed_reloads():
            code, body = self.get(port, "/metrics", TOKEN)
            self.assertEqual(code, 200, body)
            m = re.search(rb'^mailtap_reloads_total\{result="failed"\} (\d+)', body, re.M)
            return m and int(m.group(1)) == 1
        wait_until(failed_reloads, 20, "the reload without a token counted as failed")
        self.assertEqual(self.get(port, "/healthz")[0], 401)   # the running token stays in force


class Startup(IntegrationTest):

    def test_a_non_loopback_admin_address_is_refused(self):
        r = subprocess.run([mailtap_bin(), "run", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0",
                            "--captures", os.path.join(self.workdir, "caps")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"loopback", r.stderr)
        self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)

    def test_the_admin_address_is_refused_as_the_upstream(self):
        # Protection: server::refuse_as_upstream (a literal upstream equal to --admin).
        port = free_port()
        r = subprocess.run([mailtap_bin(), "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:%d" % port,
                            "--upstream", "127.0.0.1:%d" % port, "--captures", os.path.join(self.workdir, "caps")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith(b"mailtap run:")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn(b"is the admin API's own address", errors[0])

    def test_a_wildcard_admin_address_is_refused_as_the_upstream_by_an_interface_address(self):
        # Protection: relay_context::refusal_of asks is_own_address. On 0.0.0.0 the
        # admin API answers on every address of the machine, not only on loopback.
        own = own_interface_address()
        port = free_port()
        r = subprocess.run([mailtap_bin(), "run", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:%d" % port,
                            "--upstream", "%s:%d" % (own, port), "--captures", os.path.join(self.workdir, "caps")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                           env=dict(os.environ, MAILTAP_ADMIN_TOKEN=TOKEN))
        self.assertEqual(r.returncode, 2, r.stderr)
        errors = [line for line in r.stderr.splitlines() if line.startswith(b"mailtap run:")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn(b"is the admin API's own address", errors[0])

    def test_the_admin_api_is_never_dialled_by_a_name_either(self):
        # Protection: relay_context::refusal_of in session::dial_upstream. "localhost"
        # passes the start-up check (a name, not an address) and resolves to the admin API.
        port = free_port()
        m = self.start_mailtap(upstream="localhost:%d" % port, args=("--admin", "127.0.0.1:%d" % port))
        self.assertEqual(m.admin_port(), port)
        c = SmtpClient(m.port)
        greeting = c.reply()
        self.assertEqual(greeting.code, 421, greeting)
        self.assertIn("admin API", greeting.text)
        c.close()
        wait_until(lambda: capture_paths(m.captures) and Capture(capture_paths(m.captures)[-1]).end, 10,
                   "the session's end record")
        cap = Capture(capture_paths(m.captures)[-1])
        self.assertEqual(cap.end["reason"], "upstream_unreachable")
        self.assertEqual(cap.byte_records_on("upstream"), [], "nothing was sent to the admin API")

    def test_admin_off_serves_smtp_without_an_admin_line(self):
        m = self.start_mailtap(args=("--admin", "off"))
        rc, out = self.swaks(m.port, "--to", TO)
        self.assertEqual(rc, 0, out)
        with self.assertRaises(AssertionError):
            m.admin_port(timeout=1.0)


if __name__ == "__main__":
    unittest.main()
