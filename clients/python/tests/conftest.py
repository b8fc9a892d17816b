"""A real upstream for the client's tests: an aiosmtpd server (Debian's python3-aiosmtpd) on a
free loopback port that keeps every message it accepted, put behind the session's mailtap by
overriding the plugin's mailtap_upstream fixture. And pytester, for the plugin's own tests."""

import socket
import threading

import pytest

pytest_plugins = ["pytester"]


class Upstream:
    """aiosmtpd in this process; .messages: [{"mail_from", "rcpt_tos", "data"}] in order."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.lock = threading.Lock()
        upstream = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with upstream.lock:
                    upstream.messages.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos),
                                              "data": bytes(envelope.original_content)})
                return "250 2.0.0 Ok: queued"

        last = None
        for _ in range(5):   # the free port may be taken between the probe and the bind
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, ready_timeout=10)
            try:
                self.controller.start()
                return
            except Exception as e:
                last = e
        raise RuntimeError("aiosmtpd did not start: %r" % last)

    def received(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self.controller.stop()


@pytest.fixture(scope="session")
def upstream():
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="session")
def mailtap_upstream(upstream):
    return "127.0.0.1:%d" % upstream.port
