"""The web UI (admin/ui/) in a real browser: Debian's chromium driven by playwright-core
(tests/ui/README.md), against a running mailtap whose upstream is Postfix's smtp-sink.

- a message sent with swaks appears live in the sessions table, within a second of its end;
  without the events WebSocket (every subscriber slot taken), by polling;
- the session's page draws the stage waterfall in SVG (a bar per stage), and captured
  markup stays text;
- a fault armed from the faults page makes the next swaks fail with its reply code;
- the faults page loads a scenario, disarms a rule, resets, and shows the loader's error;
- with an admin token, the page asks for it once, then lists and goes live;
- over plain HTTP: the UI's pages carry their own Content-Security-Policy, the API keeps
  its own, the Host check covers the UI, and the events WebSocket admits the UI's origin.

Each browser scenario is a node script in tests/ui/ that prints one JSON line of what it
observed; the assertions are here. Screenshots go to MAILTAP_UI_ARTIFACTS (default: the
build directory's artifacts/ui/). The npm packages are installed by tests/ui/install.sh
into MAILTAP_UI_NODE (default: the build directory's ui-node/) before the first test.
"""

import http.client
import json
import os
import re
import subprocess
import unittest

from harness import HERE, IntegrationTest, LOOPBACK, SCENARIOS_DIR, mailtap_bin, wait_until
from test_admin_api import EventSocket

UI_DIR = os.path.normpath(os.path.join(HERE, "..", "ui"))
NODE = "/usr/bin/node"
SCENARIO_TIMEOUT = 120


def build_dir():
    """The build directory of the binary under test (.../relay/mailtap -> ...)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(mailtap_bin())))


def node_dir():
    return os.environ.get("MAILTAP_UI_NODE") or os.path.join(build_dir(), "ui-node")


def artifacts_dir():
    return os.environ.get("MAILTAP_UI_ARTIFACTS") or os.path.join(build_dir(), "artifacts", "ui")


def setUpModule():
    r = subprocess.run([os.path.join(UI_DIR, "install.sh"), node_dir()], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    if r.returncode != 0:
        raise AssertionError("tests/ui/install.sh failed: %s" % r.stdout.decode(errors="replace")[-2000:])


class WebUiTest(IntegrationTest):

    def setUp(self):
        super().setUp()
        self.sink = self.start_smtp_sink(dump=False)
        self.relay = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.sink.port))
        self.admin = self.relay.admin_port()

    def scenario(self, name, **extra_env):
        """Runs tests/ui/NAME.mjs against this relay; its observations (the JSON line)."""
        env = dict(os.environ)
        env.update({
            "MAILTAP_UI_URL": "http://%s:%d" % (LOOPBACK, self.admin),
            "MAILTAP_SMTP_PORT": str(self.relay.port),
            "MAILTAP_UI_NODE": node_dir(),
            "MAILTAP_UI_ARTIFACTS": artifacts_dir(),
        })
        env.update(extra_env)
        r = subprocess.run([NODE, os.path.join(UI_DIR, name + ".mjs")], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=SCENARIO_TIMEOUT)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, "%s failed: %s%s" % (name, err[-3000:], self.relay.stderr_text()[-1000:]))
        lines = out.strip().splitlines()
        self.assertTrue(lines, "%s printed nothing; stderr: %s" % (name, err[-2000:]))
        return json.loads(lines[-1])

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(LOOPBACK, self.admin, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def get_json(self, path, token=None):
        code, _, body = self.request("GET", path, headers={"Authorization": "Bearer " + token} if token else None)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def assertScreenshot(self, path):
        with open(path, "rb") as f:
            head = f.read(8)
        self.assertEqual(head, b"\x89PNG\r\n\x1a\n", path)
        self.assertGreater(os.path.getsize(path), 5000, path)


class TokenBrowser(WebUiTest):
    """The page against a relay whose admin API has a token."""

    TOKEN = "ui0123456789abcdef0123456789abcdef"

    def setUp(self):
        IntegrationTest.setUp(self)
        self.sink = self.start_smtp_sink(dump=False)
        self.relay = self.start_mailtap(upstream="%s:%d" % (LOOPBACK, self.sink.port),
                                        env=dict(os.environ, MAILTAP_ADMIN_TOKEN=self.TOKEN))
        self.admin = self.relay.admin_port()

    def test_the_page_asks_for_the_token_once_then_lists_and_goes_live(self):
        self.assertEqual(self.request("GET", "/api/v1/sessions")[0], 401)
        seen = self.scenario("token", MAILTAP_UI_TOKEN=self.TOKEN)
        self.assertEqual(seen["prompts"], ["prompt"])
        self.assertEqual(seen["swaks_code"], 0)
        self.assertEqual(seen["cells"][2:5], ["alice@example.org", "bob@example.net", "delivered"])
        self.assertTrue(seen["kept_token"])
        self.assertScreenshot(seen["screenshot"])
        # The raw capture, downloaded through the token: the capture of the session listed.
        listed = self.get_json("/api/v1/sessions", token=self.TOKEN)["sessions"]
        self.assertEqual(seen["download_name"], listed[0]["id"] + ".jsonl")
        self.assertEqual((seen["download_first_type"], seen["download_session"]), ("header", listed[0]["id"]))


class Browser(WebUiTest):

    def test_a_message_sent_with_swaks_appears_live_in_the_table(self):
        seen = self.scenario("live_table")
        self.assertEqual(seen["swaks_code"], 0)
        self.assertEqual(seen["rows_before"], 0)
        self.assertFalse(seen["reloaded"], "the row came from a reload, not the live update")
        self.assertLessEqual(seen["appeared_ms"], 1000, seen)
        # The row is the session the relay recorded, with its envelope and outcome.
        listed = self.get_json("/api/v1/sessions")["sessions"]
        self.assertEqual([s["id"] for s in listed], [seen["id"]])
        self.assertEqual((listed[0]["sender"], listed[0]["recipients"], listed[0]["recipients_total"]),
                         ("alice@example.org", ["bob@example.net"], 1))
        self.assertEqual((listed[0]["faults"], listed[0]["fault_rules"]), (0, []))
        time, client, sender, recipients, outcome, total, faults = seen["cells"]
        self.assertRegex(time, r"^\d\d:\d\d:\d\d$")
        self.assertEqual(client, listed[0]["client"])
        self.assertEqual(sender, "alice@example.org")
        self.assertEqual(recipients, "bob@example.net")
        self.assertEqual(outcome, "delivered")
        self.assertRegex(total, r"^\d+(\.\d+)? (µs|ms|s)$")
        self.assertEqual(faults, "")
        wait_until(lambda: self.sink.messages_counted() == 1, 10, "smtp-sink received the message")
        # The metrics view counted it.
        self.assertEqual(seen["metrics"]["sessions"], "1")
        self.assertEqual(seen["metrics"]["messages delivered"], "1")
        self.assertScreenshot(seen["screenshot"])

    def test_a_long_address_wraps_and_every_column_stays_on_the_page(self):
        seen = self.scenario("long_address")
        self.assertEqual(seen["swaks_code"], 0)
        self.assertEqual(seen["cells"][2:5], [seen["sender"], seen["recipient"], "delivered"])
        # No horizontal scroll: the table is no wider than the page, and the last column's
        # header (Faults) ends inside it.
        self.assertLessEqual(seen["page_scroll"], seen["viewport"], seen)
        self.assertLessEqual(seen["table"], seen["viewport"], seen)
        self.assertEqual(len(seen["header_right"]), 7, seen)
        self.assertLessEqual(max(seen["header_right"]), seen["viewport"], seen)
        self.assertScreenshot(seen["screenshot"])

    # A row without started_at (a capture the reader refuses; a session whose header has not
    # left its buffer yet) showed "Invalid Date" as its time.
    def test_a_row_without_a_start_time_shows_none_rather_than_an_invalid_date(self):
        with open(os.path.join(self.relay.captures, "20261206-000000-aaaaaaaa-000009.jsonl"), "w") as f:
            f.write('{"type":"header","format":"mailtap-capture","version":5}\n')
        seen = self.scenario("unreadable_row")
        self.assertEqual(seen["cells"][0], "\u2014", seen)
        self.assertScreenshot(seen["screenshot"])

    def test_the_session_page_draws_the_waterfall_and_keeps_markup_as_text(self):
        markup = "<img src=x onerror=window.__pwned=1>"
        code, out = self.swaks(self.relay.port, "--helo", markup, "--from", "alice@example.org",
                               "--to", "bob@example.net")
        self.assertEqual(code, 0, out)
        self.relay.wait_captures(1)
        sid = self.get_json("/api/v1/sessions")["sessions"][0]["id"]
        doc = self.get_json("/api/v1/sessions/" + sid)
        seen = self.scenario("waterfall", MAILTAP_UI_SESSION=sid, MAILTAP_UI_MARKUP="EHLO " + markup)
        self.assertEqual(seen["url_hash"], "#/session/" + sid)
        # One bar per stage of the `show --json` document, in its order, each drawn.
        self.assertEqual([b["stage"] for b in seen["bars"]], [s["name"] for s in doc["stages"]])
        for stage in ("connect", "banner", "ehlo", "mail", "rcpt", "data", "data_end", "quit"):
            self.assertIn(stage, [b["stage"] for b in seen["bars"]])
        self.assertTrue(all(b["width"] >= 1 for b in seen["bars"]), seen["bars"])
        self.assertGreater(seen["upstream_bars"], 0)
        # The client's EHLO argument is shown as the text it was, never as an element.
        self.assertTrue(seen["transcript_has_markup_text"], "the transcript does not show the EHLO line as text")
        self.assertEqual(seen["elements_in_transcript"], [])
        self.assertEqual(seen["img_on_page"], 0)
        self.assertFalse(seen["pwned"])
        self.assertScreenshot(seen["screenshot"])

    def test_a_fault_armed_from_the_faults_page_fails_the_next_swaks(self):
        seen = self.scenario("arm_fault")
        self.assertEqual(seen["status"], "armed full")
        self.assertEqual(seen["rule_cells"][:3], ["full", "reply", "rcpt"])
        # Armed from the page, so over the API: a reload removes it, and the row says so.
        self.assertEqual(seen["rule_cells"][6], "API")
        self.assertIn("SIGHUP", seen["source_title"])
        # swaks got the armed reply to its RCPT, and gave up.
        self.assertNotEqual(seen["swaks_code"], 0, seen["swaks_output"])
        self.assertRegex(seen["swaks_output"], r"(?m)^<\*\* +452 4\.2\.2 Mailbox full")
        self.assertEqual(self.sink.messages_counted(), 0)
        rules = self.get_json("/api/v1/faults")["faults"]
        self.assertEqual([(r["name"], r["injected"]) for r in rules], [("full", 1)])
        # The session's row names the fault.
        listed = self.get_json("/api/v1/sessions")["sessions"]
        self.assertEqual((listed[0]["faults"], listed[0]["fault_rules"]), (1, ["full"]))
        self.assertScreenshot(seen["screenshot"])

    def test_without_the_events_socket_the_table_still_updates_by_polling(self):
        # Every subscriber slot taken (relay/event_hub.hpp: 8): the page's upgrade gets 503.
        held = []
        for _ in range(8):
            ws = EventSocket(self.admin)
            self.addCleanup(ws.close)
            self.assertEqual(ws.status, 101)
            held.append(ws)
        refused = EventSocket(self.admin)
        refused.close()
        self.assertEqual(refused.status, 503)
        seen = self.scenario("without_events")
        self.assertEqual(seen["swaks_code"], 0)
        self.assertEqual(seen["state"], "reconnecting")
        self.assertEqual(seen["cells"][2:5], ["alice@example.org", "bob@example.net", "delivered"])

    def test_the_faults_page_loads_a_scenario_disarms_resets_and_shows_errors(self):
        path = os.path.join(SCENARIOS_DIR, "slow-upstream.toml")
        seen = self.scenario("manage_faults", MAILTAP_UI_SCENARIO=path)
        self.assertEqual(len(seen["loaded"]), 2, seen)
        self.assertTrue(seen["loaded_status"].startswith("loaded " + path), seen["loaded_status"])
        self.assertEqual(seen["after_disarm"], seen["loaded"][1:])
        self.assertEqual(seen["after_reset"], [])
        self.assertEqual(seen["after_refusal"], [])
        self.assertIn("code", seen["refused"])
        self.assertEqual(self.get_json("/api/v1/faults")["faults"], [])


class Pages(WebUiTest):
    """The UI's routes over plain HTTP."""

    def test_ui_pages_carry_their_own_policy_and_the_api_keeps_its_own(self):
        code, headers, body = self.request("GET", "/", headers={"Host": "127.0.0.1:%d" % self.admin})
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertIn(b'src="/ui/app.js"', body)
        csp = headers["content-security-policy"]
        self.assertIn("default-src 'self'", csp)
        self.assertIn("connect-src 'self' ws://127.0.0.1:%d;" % self.admin, csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertNotIn("sandbox", csp)
        self.assertNotIn("unsafe", csp)
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        code, headers, _ = self.request("GET", "/ui/app.js")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-type"], "text/javascript; charset=utf-8")
        self.assertIn("default-src 'self'", headers["content-security-policy"])
        code, headers, _ = self.request("GET", "/api/v1/faults")
        self.assertEqual(code, 200)
        self.assertEqual(headers["content-security-policy"], "default-src 'none'; frame-ancestors 'none'; sandbox")
        code, headers, _ = self.request("GET", "/ui/missing.js")
        self.assertEqual(code, 404)
        self.assertIn("sandbox", headers["content-security-policy"])

    def test_the_host_check_covers_the_ui(self):
        for path in ("/", "/ui/app.js"):
            code, _, body = self.request("GET", path, headers={"Host": "evil.example"})
            self.assertEqual(code, 403, body)
            self.assertEqual(json.loads(body)["status"], 403)
        code, _, _ = self.request("GET", "/", headers={"Host": "localhost:%d" % self.admin})
        self.assertEqual(code, 200)
        code, _, _ = self.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
        self.assertEqual(code, 405)

    def test_the_events_socket_admits_the_ui_origin(self):
        for origin in ("http://127.0.0.1:%d" % self.admin, "http://localhost:%d" % self.admin):
            ws = EventSocket(self.admin, origin=origin)
            self.addCleanup(ws.close)
            self.assertEqual(ws.status, 101, origin)
        foreign = EventSocket(self.admin, origin="http://evil.example:%d" % self.admin)
        self.addCleanup(foreign.close)
        self.assertEqual(foreign.status, 403)


if __name__ == "__main__":
    unittest.main()
