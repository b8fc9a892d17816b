"""Which sessions wait_for_session takes for the test's own: those started since the mark, by
the relay's started_at, however late the list shows them, and however many there are (it
pages back through the list). A session that started before the mark and was listed after
it needs the relay's timing, so that case runs against a stand-in for the session list."""

import datetime
import json
import socket
import smtplib
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mailtap_client import Mailtap, MailtapProcess, MailtapTimeout


class SessionList:
    """GET /api/v1/sessions (limit, offset; newest first) and GET /api/v1/sessions/{id} as
    admin/README.md gives them, of the sessions add() was given, on a free loopback port."""

    def __init__(self):
        self.rows = []
        self.lock = threading.Lock()
        listing = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                if url.path == "/api/v1/sessions":
                    self.answer(listing.page(urllib.parse.parse_qs(url.query)))
                else:
                    self.answer(listing.session(url.path.rsplit("/", 1)[-1]))

            def answer(self, document):
                body = json.dumps(document or {"error": "no such session", "status": 404}).encode()
                self.send_response(200 if document else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, started):
        """Lists one more finished session, started at `started` (Unix seconds); its id."""
        with self.lock:
            sid = "session-%d" % (len(self.rows) + 1)
            stamp = datetime.datetime.fromtimestamp(started, datetime.timezone.utc)
            self.rows.insert(0, {"id": sid, "started_at": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                 "complete": True, "in_progress": False})
            return sid

    def page(self, query):
        limit, offset = int(query["limit"][0]), int(query.get("offset", ["0"])[0])
        with self.lock:
            rows = self.rows[offset:offset + limit]
            return {"sessions": rows, "limit": limit, "offset": offset, "more": len(self.rows) > offset + len(rows)}

    def session(self, sid):
        with self.lock:
            if any(r["id"] == sid for r in self.rows):
                return {"id": sid, "outcome": "delivered", "transactions": [], "events": []}
        return None

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def session_list():
    s = SessionList()
    yield s
    s.stop()


def test_a_session_started_before_the_mark_and_listed_after_it_is_not_the_tests(session_list):
    client = Mailtap(session_list.url, token="")
    session_list.add(time.time() - 60)
    before_the_mark = time.time()
    client.mark()
    session_list.add(before_the_mark - 0.01)   # connected before the mark, listed only now
    with pytest.raises(MailtapTimeout):
        client.wait_for_session(timeout=0.5)
    own = session_list.add(time.time())
    assert client.wait_for_session(timeout=5).id == own


def quit_at_once(smtp):
    with socket.create_connection(smtp, timeout=30) as s:
        replies = s.makefile("rb")
        replies.readline()
        s.sendall(b"QUIT\r\n")
        replies.readline()


def test_more_than_a_page_of_sessions_since_the_mark_are_all_seen(tmp_path):
    with MailtapProcess(workdir=str(tmp_path)) as relay:
        client = relay.client
        quit_at_once(relay.smtp)   # before the mark
        client.mark()
        with smtplib.SMTP(*relay.smtp, timeout=30) as smtp:
            smtp.sendmail("first@example.test", ["a@example.test"], "Subject: x\r\n\r\nx\r\n")
        for _ in range(505):
            quit_at_once(relay.smtp)
        assert client.wait_for_session(lambda s: s.senders == ["first@example.test"], timeout=30).senders \
            == ["first@example.test"]
        deadline = time.monotonic() + 30
        while len([r for r in _every_row(client) if r["complete"]]) < 507:
            assert time.monotonic() < deadline, "the relay never listed its 507 sessions"
            time.sleep(0.2)
        with pytest.raises(MailtapTimeout) as none:
            client.wait_for_session(lambda s: False, timeout=0.1)
        assert "506 finished since the mark" in str(none.value)


def _every_row(client):
    rows, offset = [], 0
    while True:
        page = client.sessions(limit=500, offset=offset)
        rows += page
        if len(page) < 500:
            return rows
        offset += len(page)
