"""The admin API of a running mailtap, over HTTP (urllib, no proxies): fault rules (and which
of them this client armed, so that it can remove its own and no others), sessions and their
captures (and which of them started after a mark), health and metrics. Errors are
MailtapError with the API's one-line message and HTTP status; waits that run out are
MailtapTimeout."""

import datetime
import itertools
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8025"
# The API's page size limit (admin/README.md, GET /api/v1/sessions).
MAX_PAGE = 500
# The session list is sorted by session id, whose first part is the second the session
# started (relay/session_id.cpp), not by started_at: rows of the same second can come in
# another order. Paging back stops at a row this many seconds older than the mark.
ORDER_SLACK = 2.0
# The API's longest rule name (policies/README.md, `name`); automatic names keep under it.
MAX_NAME = 100


class MailtapError(Exception):
    """The admin API refused a request (status is its HTTP status), or cannot be reached
    (status 0)."""

    def __init__(self, message, status=0):
        super().__init__(message if not status else "%s (HTTP %d)" % (message, status))
        self.message = message
        self.status = status


class MailtapTimeout(AssertionError):
    """A wait ran out. An AssertionError, so that pytest shows it as a failed expectation."""


class Session(dict):
    """One session: the `mailtap show --json` document (captures/FORMAT.md), with shortcuts."""

    @property
    def id(self):
        return self["id"]

    @property
    def outcome(self):
        return self["outcome"]

    @property
    def transactions(self):
        return self["transactions"]

    @property
    def senders(self):
        return [t["mail_from"] for t in self["transactions"]]

    @property
    def recipients(self):
        """Every recipient the client named, over all its transactions, accepted or not."""
        return [r for t in self["transactions"] for r in t["rcpt_to"]]

    @property
    def rcpt_codes(self):
        """Every transaction's `rcpt_codes`, one after the other: the reply codes its RCPTs
        got, in order. A transaction's list answers its first recipients and can be shorter
        than its `rcpt_to`: an RCPT answered by nothing (pipelined behind a MAIL that was
        refused, or the session ended first) has no code. This flat list then no longer
        lines up with `recipients`; rcpt_replies pairs them."""
        return [c for t in self["transactions"] for c in t["rcpt_codes"]]

    @property
    def rcpt_replies(self):
        """[(recipient, code)] over all transactions, in order: each recipient with the reply
        code its RCPT got, None for one without a recorded reply."""
        return [(r, _nth(t["rcpt_codes"], i)) for t in self["transactions"] for i, r in enumerate(t["rcpt_to"])]

    @property
    def faults(self):
        """The fault records: [{rule, fault_type, decision, phase, detail, ...}]."""
        return [e for e in self["events"] if e["kind"] == "fault"]

    @property
    def final_replies(self):
        """Each transaction's reply to its end of data: [(code, text)], (None, None) for none."""
        return [(t["final_reply"]["code"], t["final_reply"]["text"]) if t["final_reply"] else (None, None)
                for t in self["transactions"]]


def _nth(items, i):
    return items[i] if i < len(items) else None


def _token_from_environment():
    path = os.environ.get("MAILTAP_ADMIN_TOKEN_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    return os.environ.get("MAILTAP_ADMIN_TOKEN") or None


class Mailtap:
    """A client of one mailtap's admin API.

    url: the API ("http://127.0.0.1:8025"). token: its bearer token, when it has one (default:
    the file in $MAILTAP_ADMIN_TOKEN_FILE, else $MAILTAP_ADMIN_TOKEN). smtp: (host, port) of
    the relay's SMTP listener when known (MailtapProcess sets it), for the application under
    test to send through. local: the relay is a process of this host that this process
    started (MailtapProcess sets it): load_scenario resolves relative paths here.

    `explain_unreachable`, when set, is called with no argument when the API cannot be
    reached; what it returns (a string, or None) is added to the error."""

    def __init__(self, url=DEFAULT_URL, token=None, timeout=30.0, smtp=None, local=False):
        self.url = url.rstrip("/")
        self.token = token if token is not None else _token_from_environment()
        self.timeout = timeout
        self.smtp = smtp
        self.smtp_missing = "this client was given none: Mailtap(url, smtp=(host, port))"
        self.local = local
        self.explain_unreachable = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._armed = []
        self.mark()

    @property
    def smtp(self):
        """(host, port) of the relay's SMTP listener. AttributeError, saying what to give, when
        it is not known."""
        if self._smtp is None:
            raise AttributeError("the relay's SMTP address is not known: " + self.smtp_missing)
        return self._smtp

    @smtp.setter
    def smtp(self, address):
        self._smtp = tuple(address) if address is not None else None

    # ------------------------------------------------------------------ HTTP

    def request(self, method, path, body=None, content_type=None, raw=False):
        """One request; the decoded JSON answer (the bytes with raw=True). MailtapError on a
        refusal, with the API's message."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else body.encode("utf-8")
            headers["Content-Type"] = content_type or "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                message = json.loads(payload)["error"]
            except (ValueError, KeyError, TypeError):
                message = payload.decode("utf-8", "replace").strip() or e.reason
            raise MailtapError(message, e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise MailtapError(self._unreachable(e)) from None
        return payload if raw else json.loads(payload)

    def _unreachable(self, error):
        message = "cannot reach the admin API at %s: %s" % (self.url, getattr(error, "reason", error))
        why = self.explain_unreachable() if self.explain_unreachable else None
        return message + ("; " + why if why else "")

    # ------------------------------------------------------------------ health and metrics

    def healthy(self):
        try:
            return self.request("GET", "/healthz") == {"status": "ok"}
        except MailtapError:
            return False

    def ready(self):
        try:
            return self.request("GET", "/readyz") == {"status": "ready"}
        except MailtapError:
            return False

    def metrics_text(self):
        return self.request("GET", "/metrics", raw=True).decode("utf-8")

    def metric(self, name, **labels):
        """The value of one sample of /metrics (name and the labels given must match), or None."""
        for line in self.metrics_text().splitlines():
            sample = _parse_sample(line)
            if sample and sample[0] == name and all(sample[1].get(k) == v for k, v in labels.items()):
                return sample[2]
        return None

    # ------------------------------------------------------------------ faults

    def faults(self):
        """The rules in force: [{name, type, phases, injected, max_count, active, source}];
        `source` is "config" (the relay's config and scenario files) or "api"."""
        return self.request("GET", "/api/v1/faults")["faults"]

    def add_faults(self, rules):
        """Adds rules: a dict with the keys of a [[fault]] table (policies/README.md), a list of
        them, or TOML text. All of them or none; returns their names."""
        if isinstance(rules, str):
            return self._armed_now(self.request("POST", "/api/v1/faults", rules, "application/toml")["added"])
        return self._armed_now(self.request("POST", "/api/v1/faults", json.dumps(rules), "application/json")["added"])

    add_fault = add_faults

    @property
    def armed(self):
        """The names of the rules armed through this client (add_faults, reply, next_rcpt,
        load_scenario) and not removed through it since, oldest first."""
        return list(self._armed)

    def remove_fault(self, name):
        """Removes one rule (a firewall rule's name: all its parts); MailtapError 404 when none
        is in force."""
        try:
            self.request("DELETE", "/api/v1/faults/" + urllib.parse.quote(name, safe=""))
        except MailtapError as e:
            if e.status == 404:
                self._disarmed(name)
            raise
        self._disarmed(name)

    def remove_armed(self):
        """Removes the rules this client armed and no others: not a relay's config and scenario
        files' rules, nor what other clients armed (other pytest-xdist workers or test runs on
        a shared relay). A rule already gone (removed elsewhere, a SIGHUP reload) is passed
        over. Returns the names removed."""
        return [name for name in self.armed if self._remove_if_there(name)]

    def remove_api_rules(self):
        """Removes every rule armed over the API (`source` "api"), whoever armed it, and leaves
        the config and scenario files' rules. For a relay of one's own: on a shared one it
        removes the other users' rules too. Returns the names removed."""
        return [f["name"] for f in self.faults() if f.get("source") == "api" and self._remove_if_there(f["name"])]

    def reset_faults(self):
        """Removes every rule with its state and counts, the relay's config rules and other
        clients' included; returns how many there were."""
        removed = self.request("POST", "/api/v1/faults/reset")["removed"]
        self._armed.clear()
        return removed

    def counters(self):
        """{rule name: injections} of the rules in force."""
        return {c["rule"]: c["count"] for c in self.request("GET", "/api/v1/faults/counters")["counters"]}

    def load_scenario(self, path):
        """Loads a scenario file from the relay's filesystem; returns the rule names. The relay
        reads the file and takes a relative path from its own working directory: the path is
        sent as given. Only a client of a relay this process started on this host (local=True:
        MailtapProcess, the pytest plugin's own relay) resolves a relative path first, against
        this process's working directory."""
        if self.local:
            path = os.path.abspath(path)
        return self._armed_now(self.request("POST", "/api/v1/scenarios", json.dumps({"path": path}))["added"])

    def reply(self, phase, code, enhanced=None, text=None, count=1, name=None, **match):
        """Arms a `reply` fault: the next `count` commands of `phase` (a phase name, or a list
        of them) that match (the keys of policies/README.md: recipient="x@y", sender="*@z",
        ...) get `code` instead of reaching the upstream, in the SMTP sessions that open after
        it is armed (a session keeps the rules it opened with). count=None: every one, until
        removed. Returns the rule's name: `name`, else one unique to this process
        (automatic_name)."""
        rule = {"name": name or automatic_name(phase, code), "type": "reply", "phase": phase, "code": code}
        if enhanced:
            rule["enhanced"] = enhanced
        if text:
            rule["text"] = text
        if count is not None:
            rule["max_count"] = count
        rule.update(match)
        return self.add_faults(rule)[0]

    def next_rcpt(self, recipient, code, enhanced=None, text=None, count=1, name=None):
        """The next RCPT to `recipient` (a glob: "*@full.example") gets `code`, in a session
        opened after this call."""
        return self.reply("rcpt", code, enhanced, text, count, name, recipient=recipient)

    def _armed_now(self, names):
        self._armed.extend(n for n in names if n not in self._armed)
        return names

    def _disarmed(self, name):
        """Forgets `name` and, for a firewall rule, its parts (`name/banner`...)."""
        self._armed = [n for n in self._armed if n != name and not n.startswith(name + "/")]

    def _remove_if_there(self, name):
        """Removes one rule; False when it was not in force."""
        try:
            self.remove_fault(name)
            return True
        except MailtapError as e:
            if e.status != 404:
                raise
            return False

    # ------------------------------------------------------------------ live events

    def events(self, timeout=10.0):
        """A subscription to the live events (an EventStream: next(), wait_for(predicate),
        close(); a context manager). Only events after it opens are seen."""
        from mailtap_client.events import EventStream
        return EventStream(self.url, self.token, timeout)

    # ------------------------------------------------------------------ sessions

    def sessions(self, limit=50, offset=0, outcome=None, client=None):
        """Rows of the session list, newest first: [{id, started_at, client, outcome, complete, ...}]."""
        query = {"limit": limit, "offset": offset}
        if outcome:
            query["outcome"] = outcome
        if client:
            query["client"] = client
        return self.request("GET", "/api/v1/sessions?" + urllib.parse.urlencode(query))["sessions"]

    def session(self, session_id):
        """One session as the `mailtap show --json` document."""
        return Session(self.request("GET", "/api/v1/sessions/" + urllib.parse.quote(session_id, safe="")))

    def raw(self, session_id):
        """The capture file (JSON Lines, captures/FORMAT.md) as bytes."""
        return self.request("GET", "/api/v1/sessions/%s/raw" % urllib.parse.quote(session_id, safe=""), raw=True)

    def mark(self):
        """From now on wait_for_session looks only at sessions that start later: those whose
        `started_at` (the relay's wall clock when it accepted the connection) is at or after
        this moment by this host's clock. The two clocks must agree: the same host, or hosts
        kept in step (NTP); a relay d seconds behind misses the sessions of the first d
        seconds, one ahead takes those of the last d seconds before the mark. A new client is
        marked at its creation; the pytest fixture marks before each test."""
        self._mark = time.time()

    def wait_for_session(self, predicate=None, timeout=10.0, interval=0.05):
        """The first finished session started since mark() (oldest first) for which
        predicate(Session) is true (any, without one). MailtapTimeout when none comes within
        `timeout` seconds. On a relay others use too (other test runs, other pytest-xdist
        workers), their sessions count as well: give a predicate that knows your own."""
        deadline = time.monotonic() + timeout
        rejected = set()
        while True:
            for row in self._finished_since_mark():
                if row["id"] in rejected:
                    continue
                s = self.session(row["id"])
                if predicate is None or predicate(s):
                    return s
                rejected.add(row["id"])
            if time.monotonic() >= deadline:
                raise MailtapTimeout(_no_session_message(predicate, timeout, len(rejected)))
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 2, 0.5)

    def _finished_since_mark(self):
        """The list's rows of the finished sessions started since the mark, oldest first."""
        rows = [r for r in self._rows_started_since(self._mark) if r["complete"]]
        return sorted(rows, key=_started_at)

    def _rows_started_since(self, since):
        """Every listed session started at or after `since` (Unix seconds): the list, newest
        first, page by page until a row older than `since` by ORDER_SLACK, or its end."""
        rows, seen, offset = [], set(), 0
        while True:
            query = urllib.parse.urlencode({"limit": MAX_PAGE, "offset": offset})
            page = self.request("GET", "/api/v1/sessions?" + query)
            for row in page["sessions"]:
                started = _started_at(row)
                if started is None or row["id"] in seen:
                    continue   # an unreadable capture has no start; a row the paging saw twice
                if started < since - ORDER_SLACK:
                    return rows
                if started >= since:
                    rows.append(row)
                    seen.add(row["id"])
            if not page["sessions"] or not page.get("more"):
                return rows
            offset += len(page["sessions"])


def _started_at(row):
    """A session row's `started_at` (RFC 3339, UTC: "2026-12-07T21:21:27.946636Z") as Unix
    seconds; None when it has none (an unreadable capture)."""
    text = row.get("started_at") or ""
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def _no_session_message(predicate, timeout, finished):
    if predicate is None:
        return "no session finished in %.1f s since the mark" % timeout
    return ("no session matching the predicate in %.1f s: %d finished since the mark, none matched"
            % (timeout, finished))


def automatic_name(phase, code):
    """A rule name unique to this process: the phases ("rcpt", or "rcpt+mail" for a list),
    the code, this process's tag (process_tag) and a serial: "rcpt-452-gw1-3f9a0c2e-1".
    Two processes arming rules on one relay (pytest-xdist workers, CI jobs) never make the
    same name."""
    phases = "+".join(phase) if isinstance(phase, (list, tuple)) else str(phase)
    tail = "-%s-%s-%d" % (code, process_tag(), next(_serial))
    return phases[:MAX_NAME - len(tail)] + tail


def process_tag():
    """This process's part of automatic rule names: the pytest-xdist worker ("gw1") when there
    is one, and 8 random hex digits drawn once per process (again in a forked child)."""
    global _tag
    if _tag[0] != os.getpid():
        worker = re.sub(r"[^A-Za-z0-9_.]", "", os.environ.get("PYTEST_XDIST_WORKER", ""))
        _tag = (os.getpid(), (worker + "-" if worker else "") + os.urandom(4).hex())
    return _tag[1]


_tag = (None, "")
_serial = itertools.count(1)

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _parse_sample(line):
    """(name, labels, value) of a Prometheus text-format sample line; None for others."""
    if not line or line.startswith("#"):
        return None
    m = _SAMPLE.match(line)
    if not m:
        return None
    labels = {k: v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
              for k, v in _LABEL.findall(m.group(2) or "")}
    return m.group(1), labels, float(m.group(3))
