"""The live events of mailtap's admin API (GET /api/v1/events, admin/README.md "Live events"):
a minimal RFC 6455 client over a plain socket, enough for what mailtap sends (unfragmented
text messages, pings, a close). Each message is one JSON event: session_started, stage,
fault, session_ended, and dropped {count} when this subscriber read too slowly."""

import base64
import hashlib
import json
import os
import select
import socket
import struct
import time
import urllib.parse

# RFC 6455 1.3: the key the server's Sec-WebSocket-Accept answers.
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# What one event may be: mailtap's are a few hundred bytes (relay/event_hub.hpp).
MAX_MESSAGE = 1 << 20
MAX_HEAD = 16 * 1024


class EventStream:
    """Subscribed on construction; close() (or `with`) ends it. next() and wait_for() raise
    TimeoutError when nothing comes in time, ConnectionError when the stream ended."""

    def __init__(self, url, token=None, timeout=10.0):
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        host_header = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        head = ("GET /api/v1/events HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (host_header, key))
        if token:
            head += "Authorization: Bearer %s\r\n" % token
        self.sock.sendall((head + "\r\n").encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ConnectionError("the events handshake's answer is too long")
            self._read(deadline)
        answer, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = answer.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1]) if status_line.startswith("HTTP/1.1 ") else 0
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if status != 101:
            self.sock.close()
            from mailtap_client.client import MailtapError
            raise MailtapError("the events WebSocket was refused: %s" % (self.buf.decode("utf-8", "replace").strip()
                                                                          or status_line), status)
        accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            self.sock.close()
            raise ConnectionError("the events handshake's Sec-WebSocket-Accept is wrong")

    def _read(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.sock], [], [], left)[0]:
            raise TimeoutError("no event in time")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the events WebSocket closed")
        self.buf += chunk

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._read(deadline)

    def _send(self, opcode, payload=b""):
        # RFC 6455 5.3: what a client sends is masked.
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked)

    def next(self, timeout=10.0):
        """The next event (a dict)."""
        deadline = time.monotonic() + timeout
        while True:
            self._need(2, deadline)
            opcode, length, at = self.buf[0] & 0x0F, self.buf[1] & 0x7F, 2
            if length == 126:
                self._need(4, deadline)
                length, at = struct.unpack("!H", self.buf[2:4])[0], 4
            elif length == 127:
                self._need(10, deadline)
                length, at = struct.unpack("!Q", self.buf[2:10])[0], 10
            if length > MAX_MESSAGE:
                raise ConnectionError("an event of %d bytes is larger than %d" % (length, MAX_MESSAGE))
            self._need(at + length, deadline)
            payload, self.buf = self.buf[at:at + length], self.buf[at + length:]
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x9:
                self._send(0xA, payload[:125])   # pong
            elif opcode == 0x8:
                raise ConnectionError("the events WebSocket closed")

    def wait_for(self, predicate, timeout=10.0):
        """The first event for which predicate(event) is true; the others are passed over."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()))
            if predicate(event):
                return event

    def close(self):
        try:
            self._send(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
