"""Integration harness for mailtap: real peers on loopback, bounded waits, captures read back.

Everything here binds 127.0.0.1 on ports found free at run time, bounds every loop in count
and time, and registers a cleanup for every process, thread and socket it starts, so a
failing test leaves nothing behind. Tests assert on SMTP replies, on what the upstream
received, and on captures -- never on log text (mailtap's stderr is kept in the test's
work directory only to explain a failure).

Peers:
  Mailtap          the relay under test (`mailtap run`), port parsed from its ready line
  SmtpSink         Postfix smtp-sink (-c counters on stdout, -d per-message dumps)
  Recorder         aiosmtpd Controller storing envelope.original_content (un-stuffed bytes)
  ScriptedUpstream raw-socket SMTP server that logs every byte and can misbehave on purpose
  ScriptedAnswers  raw-socket SMTP server whose every reply (or hang-up) a test scripts
  SmtpClient       raw-socket client for pipelining / smuggling probes

Environment:
  MAILTAP_BIN      the binary (ctest passes $<TARGET_FILE:mailtap>); default
                   ../../build-it/relay/mailtap relative to this file
  MAILTAP_IT_KEEP  if set, work directories are kept (paths printed) for post-mortems
  MAILTAP_EXTRA_ARGS  extra `mailtap run` options for every relay started (shell words), e.g.
                   "--threads 2" for the ThreadSanitizer run of scripts/test --tsan
  MAILTAP_ADMIN_TOKEN, MAILTAP_ADMIN_TOKEN_FILE  not passed to the relays started (env=None):
                   an admin token exported for the CLI would make every admin request want it
  MAILTAP_MEMORY_SCALE  a factor (default 1) for every memory bound a test asserts
                   (memory_bound_kib): scripts/test --sanitize and --tsan set it, since a
                   sanitizer's shadow memory multiplies what the relay holds
  MAILTAP_MEMORY_SLACK_KIB  KiB added to every such bound (default 0): under AddressSanitizer
                   the freed-block quarantine (ASAN_OPTIONS quarantine_size_mb) keeps that much
                   freed memory resident whatever the relay buffers
  MAILTAP_TIME_SCALE  a factor (default 1) for start-up waits and timing tolerances (scaled):
                   a relay under a sanitizer starts and answers several times slower
"""

import base64
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPBACK = "127.0.0.1"
SWAKS = "/usr/bin/swaks"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
PYTHON = "/usr/bin/python3"

READY_RE = re.compile(
    r"^mailtap: listening on 127\.0\.0\.1:(\d+), upstream (\S+), captures in (.+)$")
# The line after it when the admin API listens (admin/README.md).
ADMIN_RE = re.compile(r"^mailtap: admin API on http://127\.0\.0\.1:(\d+)$")
# The same line when an implicit TLS listener is configured (--listen-tls).
READY_TLS_RE = re.compile(
    r"^mailtap: listening on 127\.0\.0\.1:(\d+), tls on 127\.0\.0\.1:(\d+), upstream (\S+), captures in (.+)$")


def mailtap_bin():
    path = os.environ.get("MAILTAP_BIN")
    if not path:
        path = os.path.normpath(os.path.join(HERE, "..", "..", "build-it", "relay", "mailtap"))
    return path


# ---------------------------------------------------------------- small helpers

def wait_until(predicate, timeout, what="condition", interval=0.02):
    """Polls predicate() until it returns a truthy value (returned) or timeout seconds pass
    (AssertionError naming `what`). The poll interval grows to at most 0.2 s."""
    deadline = time.monotonic() + timeout
    delay = interval
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.2)


def free_port():
    """A port that was free a moment ago (for peers that cannot be told to use port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def own_interface_address():
    """An IPv4 address of this machine's own, other than loopback when it has a route: the
    source address the kernel picks toward a documentation address (connecting a UDP socket
    sends nothing). 127.0.0.1 on a machine without a route."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("198.51.100.1", 9))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


def closed_port():
    """A loopback port with nobody listening: connecting to it is refused."""
    return free_port()


def port_accepts(port):
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def listening_on(port):
    """True if some socket LISTENs on 127.0.0.1:port (from /proc/net/tcp; no connection made)."""
    want = ":%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[1].endswith(want) and fields[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def crlf(text):
    """Bytes with every line ending turned into CRLF."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return re.sub(rb"\r?\n", b"\r\n", text)


def dot_stuff(message):
    """SMTP transparency (RFC 5321 4.5.2): a leading '.' on any line is doubled."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def dot_unstuff(wire):
    """What a receiving server stores: one leading '.' removed from every line."""
    lines = wire.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def bare_cr_lf_positions(data):
    """Offsets of CR not followed by LF and LF not preceded by CR."""
    out = [m.start() for m in re.finditer(rb"\r(?!\n)", data)]
    out += [m.start() for m in re.finditer(rb"(?<!\r)\n", data)]
    return sorted(out)


def normalize_bare(data):
    """mailtap's `normalize` mode (protocol/data_framer.hpp): each bare CR, bare LF and NUL
    becomes a space, in place; the line goes on, so only CRLF.CRLF ends the message."""
    return re.sub(rb"\r(?!\n)|(?<!\r)\n|\x00", b" ", data)


def normalized_message(wire):
    """The message a `normalize` relay and its upstream both read from DATA bytes `wire`:
    the normalized stream up to its first CRLF.CRLF (the terminator excluded), and the
    bytes after that terminator (read as the next commands)."""
    norm = normalize_bare(wire)
    end = (b"\r\n" + norm).find(b"\r\n.\r\n")
    assert end >= 0, "no end of data in %r" % wire[-40:]
    rest = norm[end + 3:]
    return norm[:end], rest


def read_status_kib(pid, field):
    """A memory figure of process `pid` from /proc/PID/status, in KiB: "VmRSS" (resident now)
    or "VmHWM" (the resident peak since it started). 0 once the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_vmrss_kib(pid):
    return read_status_kib(pid, "VmRSS")


def memory_bound_kib(kib):
    """A memory bound of `kib` as a test asserts it: unchanged in a normal run. Under a
    sanitizer (scripts/test) it is multiplied by MAILTAP_MEMORY_SCALE, for the shadow memory
    that grows the relay's resident size by a factor, and MAILTAP_MEMORY_SLACK_KIB is added,
    for the freed blocks AddressSanitizer keeps resident in its quarantine."""
    return int(kib * float(os.environ.get("MAILTAP_MEMORY_SCALE", "1"))
               + float(os.environ.get("MAILTAP_MEMORY_SLACK_KIB", "0")))


def scaled(seconds):
    """A start-up wait or a timing tolerance of `seconds` as a test uses it: unchanged in a
    normal run, multiplied by MAILTAP_TIME_SCALE under a sanitizer (scripts/test), where the
    relay starts and answers several times slower. Not for the delays a test asserts: those
    are what mailtap was asked for, whatever it runs under."""
    return seconds * float(os.environ.get("MAILTAP_TIME_SCALE", "1"))


def cpu_seconds(pid):
    """User plus system CPU time process `pid` has used so far (/proc/PID/stat), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_message(message_id, body=b"hello\r\n", subject="integration test", extra_headers=b""):
    """A complete RFC 5322 message with CRLF line endings and a known Message-ID."""
    head = ("From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: %s\r\n"
            "Message-ID: %s\r\n" % (subject, message_id)).encode("utf-8")
    return head + extra_headers + b"\r\n" + body


# ---------------------------------------------------------------- SMTP replies and raw client

class Reply:
    def __init__(self, lines):
        self.lines = lines                    # raw lines without CRLF, bytes
        self.code = int(lines[0][:3])
        texts = [l[4:].decode("utf-8", "replace") for l in lines]
        self.texts = texts
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})\b", texts[0])
        self.enhanced = m.group(1) if m else ""

    @property
    def text(self):
        return "\n".join(self.texts)

    def __repr__(self):
        return "Reply(%r)" % b"\r\n".join(self.lines)


class ConnectionClosed(Exception):
    pass


class SmtpClient:
    """A raw SMTP client: send exact bytes, read exact replies, each read bounded in time."""

    def __init__(self, port, timeout=20.0):
        self.timeout = timeout
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def _fill(self, deadline):
        if self.eof:
            raise ConnectionClosed("connection closed; unread %r" % self.buf[:200])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no reply in time; buffered %r" % self.buf[-200:])
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no reply in time; buffered %r" % self.buf[-200:])
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed; unread %r" % self.buf[:200])
        self.buf += chunk

    def reply(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                self._fill(deadline)
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError("not an SMTP reply line: %r" % line)
            lines.append(line)
            if line[3:4] != b"-":
                return Reply(lines)

    def replies(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        return [self.reply(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def command(self, line, timeout=None):
        self.send(line + ("\r\n" if isinstance(line, str) else b"\r\n"))
        return self.reply(timeout)

    def read_to_eof(self, timeout=None):
        """Every byte until the peer closes; AssertionError if it does not close in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            try:
                self._fill(deadline)
            except ConnectionClosed:
                break
            except TimeoutError:
                raise AssertionError("peer did not close the connection in time; got %r"
                                     % self.buf[-300:])
        data, self.buf = self.buf, b""
        return data

    def closed_by_peer(self, timeout=None):
        try:
            self.read_to_eof(timeout)
            return True
        except AssertionError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def parse_replies(data):
    """All complete replies in `data` (bytes)."""
    out, lines = [], []
    for line in data.split(b"\r\n"):
        if len(line) < 3 or not line[:3].isdigit():
            continue
        lines.append(line)
        if line[3:4] != b"-":
            out.append(Reply(lines))
            lines = []
    return out


# ---------------------------------------------------------------- captures

def record_bytes(record):
    """A `bytes` record's bytes: its `latin1` text (format 5, one character per byte) or its
    `b64` (captures/FORMAT.md); exactly one of them."""
    if ("latin1" in record) == ("b64" in record):
        raise AssertionError("a bytes record has exactly one of latin1 and b64: %r" % record)
    if "latin1" in record:
        return record["latin1"].encode("latin-1")
    return base64.b64decode(record["b64"], validate=True)


class Capture:
    """One capture file parsed directly from its JSON lines (format: captures/FORMAT.md).
    Parsing is tolerant (every readable record is kept) so a test can still inspect a
    malformed capture; problems() says what is wrong with it as a capture file."""

    def __init__(self, path):
        self.path = path
        self.records = []
        self.truncated = False
        with open(path, "rb") as f:
            raw = f.read()
        lines = raw.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines:
            self.truncated = True
        for i, line in enumerate(lines):
            try:
                self.records.append(json.loads(line))
            except ValueError:
                if i == len(lines) - 1:
                    self.truncated = True
                else:
                    raise

    def of_type(self, t):
        return [r for r in self.records if r.get("type") == t]

    @property
    def header(self):
        return self.records[0] if self.records and self.records[0].get("type") == "header" else None

    @property
    def end(self):
        """The end record, wherever it is (see problems() for where it should be)."""
        ends = self.of_type("end")
        return ends[0] if ends else None

    def problems(self):
        """Why this is not a complete, well-formed capture (empty list if it is)."""
        out = []
        if self.header is None:
            out.append("first record is not a header")
        ends = [i for i, r in enumerate(self.records) if r.get("type") == "end"]
        if not ends:
            out.append("no end record")
        else:
            if len(ends) > 1:
                out.append("%d end records" % len(ends))
            after = self.records[ends[0] + 1:]
            if after:
                out.append("%d record(s) after the end record, first: %s" % (
                    len(after), json.dumps(after[0])[:300]))
            if not self.records[ends[0]].get("complete"):
                out.append("end record says complete=false (dropped_records=%s)"
                           % self.records[ends[0]].get("dropped_records"))
        if self.truncated:
            out.append("last line is cut")
        return out

    @property
    def complete(self):
        return not self.problems()

    @property
    def transactions(self):
        return self.of_type("transaction")

    @property
    def notes(self):
        return [r["text"] for r in self.of_type("note")]

    def byte_records_on(self, leg):
        """The `bytes` and `bytes_ref` records of one leg, both directions."""
        return [r for r in self.records if r.get("type") in ("bytes", "bytes_ref") and r.get("leg") == leg]

    def bytes_of(self, leg, direction):
        """Every byte recorded for one leg and direction, in order. A `bytes_ref` (format 4,
        captures/FORMAT.md: the relay's copy of the client's bytes) is resolved against the
        client's incoming bytes recorded before it."""
        client_in, out = bytearray(), []
        for r in self.records:
            kind = r.get("type")
            if kind == "bytes":
                data = record_bytes(r)
                if r["leg"] == "client" and r["dir"] == "in":
                    client_in += data
            elif kind == "bytes_ref":
                at, length = r["client_in_at"], r["length"]
                if at + length > len(client_in):
                    raise AssertionError("bytes_ref past the client's bytes: %r" % r)
                data = bytes(client_in[at:at + length])
            else:
                continue
            if r["leg"] == leg and r["dir"] == direction:
                out.append(data)
        return b"".join(out)

    def client_replies(self):
        return parse_replies(self.bytes_of("client", "out"))


def capture_paths(directory):
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(os.path.join(directory, n) for n in names if n.endswith(".jsonl"))


def capture_has_end(path):
    """True when the file's last line is a complete `end` record (cheap: reads the tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return False
    if not tail.endswith(b"\n"):
        return False
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        return json.loads(last).get("type") == "end"
    except ValueError:
        return False


def open_paths(pid):
    """Real paths of the files process `pid` has open (empty if it has exited)."""
    out = set()
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return out
    for fd in fds:
        try:
            out.add(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def wait_for_captures(directory, count, timeout=30.0, pid=None):
    """Waits until `directory` holds at least `count` captures the writer is done with, and
    returns them parsed, oldest session first.

    With `pid` (the mailtap process), "done" means mailtap no longer holds the file open:
    its writer closes a capture after the session's last record, so nothing more can be
    appended (this also catches records written after the end record). That holds while
    fewer captures are open than an eighth of mailtap's descriptor limit: above that, an idle
    session's capture is closed until its next write (captures/writer.hpp, park_idle_above),
    and a test with that many sessions must not use `pid`. Without `pid`,
    "done" means the last line is an end record."""
    def ready():
        paths = capture_paths(directory)
        if len(paths) < count:
            return None
        if pid is not None:
            held = open_paths(pid)
            if any(os.path.realpath(p) in held for p in paths):
                return None
            return paths
        if all(capture_has_end(p) for p in paths):
            return paths
        return None
    paths = wait_until(ready, timeout, "%d finished capture(s) in %s" % (count, directory))
    return [Capture(p) for p in paths]


def run_mailtap(args, timeout=30.0, **kw):
    return subprocess.run([mailtap_bin()] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=scaled(timeout), **kw)


def show_json(path, timeout=60.0):
    """`mailtap show CAPTURE --json`, parsed."""
    r = run_mailtap(["show", path, "--json"], timeout=timeout)
    if r.returncode != 0:
        raise AssertionError("mailtap show %s exited %d: %s" % (path, r.returncode, r.stderr.decode()))
    return json.loads(r.stdout)


_STOPPED_RE = re.compile(r"stopped: (?P<sessions>\d+) sessions, (?P<transactions>\d+) transactions, "
                         r"(?P<delivered>\d+) delivered, (?P<refused_commands>\d+) refused commands, "
                         r"(?P<ambiguous_end_of_data>\d+) ambiguous end-of-data")
_CAPTURES_RE = re.compile(r"captures: (?P<captures_complete>\d+) complete, (?P<captures_incomplete>\d+) "
                          r"incomplete, (?P<capture_write_failures>\d+) write failures, (?P<captures_pruned>\d+) "
                          r"removed by the retention limits; (?P<indexed>\d+) indexed, (?P<index_failures>\d+) "
                          r"index failures, (?P<index_left_out>\d+) left out of the index")
_ERRORS_RE = re.compile(r"errors: (?P<errors>\d+) \(upstream unreachable (?P<upstream_unreachable>\d+), "
                        r"upstream TLS failed (?P<upstream_tls_failed>\d+), refused at max_sessions "
                        r"(?P<refused_max_sessions>\d+), accept failed (?P<accept_failed>\d+)")


def shutdown_counters(stderr_text):
    """The counters of mailtap's shutdown summary (relay/cli_run.cpp), by name: sessions,
    transactions, delivered, refused_commands, ambiguous_end_of_data, captures_complete,
    captures_incomplete, capture_write_failures, captures_pruned, indexed, index_failures,
    index_left_out, and (when there were errors) errors,
    upstream_unreachable, upstream_tls_failed, refused_max_sessions, accept_failed. Until the
    admin API lands the summary is the only place the relay reports them."""
    out = {}
    for regex in (_STOPPED_RE, _CAPTURES_RE, _ERRORS_RE):
        found = [m for m in map(regex.search, stderr_text.splitlines()) if m]
        if found:
            out.update({k: int(v) for k, v in found[-1].groupdict().items()})
    if "sessions" not in out:
        raise AssertionError("no shutdown summary in mailtap's log: %s" % stderr_text[-2000:])
    return out


# ---------------------------------------------------------------- processes

class Process:
    """A child process whose output goes to files in the work directory; stop() always kills."""

    def __init__(self, argv, workdir, name, **popen):
        self.name = name
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=popen.pop("stdout", self._out),
                                     stderr=self._err, **popen)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s (pid %d) still running after %.1f s" % (self.name, self.pid, timeout))

    def stop(self, grace=5.0):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self._out, self._err):
            try:
                f.close()
            except OSError:
                pass
        if self.proc.stdout:
            self.proc.stdout.close()


class Mailtap(Process):
    """`mailtap run --listen 127.0.0.1:0 ...`; waits for the one ready line on stdout.

    env: the child's environment (None: inherited). listen: its --listen (default: a free
    loopback port). minimal=True passes only --listen,
    --captures and `args` (no --upstream, no --seed), as a new user would run it. With
    --listen-tls in `args`, tls_port is the implicit TLS listener's port (else None)."""

    def __init__(self, workdir, upstream="builtin", captures=None, args=(), name="mailtap",
                 ready_timeout=None, umask=-1, env=None, minimal=False, listen=None):
        self.captures = captures or os.path.join(workdir, name + "-captures")
        extra = shlex.split(os.environ.get("MAILTAP_EXTRA_ARGS", ""))
        # The admin API on a free port of its own, so that relays started side by side never
        # compete for its default one (127.0.0.1:8025).
        admin = [] if any(a == "--admin" or a.startswith("--admin=") for a in (*extra, *args)) \
            else ["--admin", "%s:0" % LOOPBACK]
        listen = listen or "%s:0" % LOOPBACK
        if minimal:
            argv = [mailtap_bin(), "run", "--listen", listen,
                    "--captures", self.captures, *admin, *extra, *args]
        else:
            argv = [mailtap_bin(), "run", "--listen", listen, "--upstream", upstream,
                    "--captures", self.captures, "--seed", "1", *admin, *extra, *args]
        if env is None:
            # An admin token exported for the CLI clients would make every relay here want it.
            env = {k: v for k, v in os.environ.items() if k not in ("MAILTAP_ADMIN_TOKEN", "MAILTAP_ADMIN_TOKEN_FILE")}
        super().__init__(argv, workdir, name, stdout=subprocess.PIPE, umask=umask, env=env)
        line = self._ready_line(scaled(ready_timeout or 20.0))
        self.tls_port = None
        m = READY_RE.match(line)
        if m:
            self.port = int(m.group(1))
            self.upstream_label = m.group(2)
            return
        m = READY_TLS_RE.match(line)
        if not m:
            self.stop()
            raise AssertionError("unexpected ready line %r; stderr: %s" % (line, self.stderr_text()))
        self.port = int(m.group(1))
        self.tls_port = int(m.group(2))
        self.upstream_label = m.group(3)

    def _ready_line(self, timeout):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = getattr(self, "_stdout_rest", b"")
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise AssertionError("mailtap printed no ready line in %.0f s; stderr: %s"
                                     % (timeout, self.stderr_text()))
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise AssertionError("mailtap exited %s before listening; stderr: %s"
                                         % (self.proc.returncode, self.stderr_text()))
                data += chunk
        line, self._stdout_rest = data.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def admin_port(self, timeout=5.0):
        """The admin API's port, from the line mailtap prints after its ready line."""
        if getattr(self, "_admin_port", None) is None:
            line = self._ready_line(timeout)
            m = ADMIN_RE.match(line)
            if not m:
                raise AssertionError("unexpected admin line %r; stderr: %s" % (line, self.stderr_text()))
            self._admin_port = int(m.group(1))
        return self._admin_port

    def rss_kib(self):
        return read_vmrss_kib(self.pid)

    def hwm_kib(self):
        """mailtap's resident peak since it started (VmHWM), in KiB."""
        return read_status_kib(self.pid, "VmHWM")

    def stop_with_counters(self, timeout=40.0):
        """SIGTERM, exit 0, and the counters of the shutdown summary as a dict (see
        shutdown_counters). The relay reports its counters nowhere else yet."""
        self.signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code != 0:
            raise AssertionError("mailtap exited %d after SIGTERM: %s" % (code, self.stderr_text()[-2000:]))
        return shutdown_counters(self.stderr_text())

    def captures_now(self):
        return capture_paths(self.captures)

    def wait_captures(self, count, timeout=30.0):
        """`count` captures this mailtap has finished writing (see wait_for_captures)."""
        return wait_for_captures(self.captures, count, timeout, pid=self.pid)


class SmtpSink(Process):
    """Postfix smtp-sink on a free loopback port: -c counters on stdout, optional -d dumps."""

    def __init__(self, workdir, args=(), dump=True, name="smtp-sink"):
        self.dump_dir = None
        base = list(args)
        if os.geteuid() == 0:
            base = ["-u", "nobody"] + base
        if dump:
            # smtp-sink writes dumps as `nobody`: the path must be traversable and writable.
            os.chmod(workdir, 0o755)
            self.dump_dir = os.path.join(workdir, name + "-dumps")
            os.makedirs(self.dump_dir, exist_ok=True)
            os.chmod(self.dump_dir, 0o777)
            base += ["-d", self.dump_dir + "/%H%M%S."]
        last_error = ""
        for _ in range(5):   # the free port may be taken by a parallel test in between
            self.port = free_port()
            argv = [SMTP_SINK, "-c", *base, "%s:%d" % (LOOPBACK, self.port), "256"]
            super().__init__(argv, workdir, name)
            try:
                wait_until(lambda: listening_on(self.port) or not self.alive(), 10,
                           "smtp-sink listening on %d" % self.port)
            except AssertionError:
                self.stop()
                raise
            if self.alive():
                return
            last_error = self.stderr_text()
            self.stop()
        raise AssertionError("smtp-sink did not start: %s" % last_error)

    def messages_counted(self):
        """The latest `mesg=N` counter smtp-sink printed (-c): messages ended with '.'."""
        counts = re.findall(r"mesg=(\d+)", self.stdout_text())
        return int(counts[-1]) if counts else 0

    def dumps(self):
        """Dumped transactions as (smtp-sink headers dict, message bytes), oldest first.
        smtp-sink stores lines with LF endings and appends an empty line."""
        if not self.dump_dir:
            return []
        out = []
        for name in sorted(os.listdir(self.dump_dir)):
            with open(os.path.join(self.dump_dir, name), "rb") as f:
                data = f.read()
            head, _, rest = data.partition(b"Received: ")
            fields = {}
            for line in head.split(b"\n"):
                k, _, v = line.partition(b": ")
                if k:
                    fields.setdefault(k.decode(), []).append(v)
            # The Received header is three lines (the 2nd and 3rd folded); the message follows.
            rec_lines = rest.split(b"\n", 3)
            out.append((fields, rec_lines[3] if len(rec_lines) > 3 else b""))
        return out


class ControllerMessages:
    """What every in-process aiosmtpd upstream shares: `messages` under `lock`, a
    `controller` to stop, and waiting for N messages. `label` names it in timeouts."""

    label = "upstream"

    def count(self):
        with self.lock:
            return len(self.messages)

    def wait_for(self, n, timeout=30.0):
        wait_until(lambda: self.count() >= n, timeout, "%d message(s) at the %s" % (n, self.label))
        with self.lock:
            return list(self.messages)

    def stop(self):
        try:
            self.controller.stop()
        except Exception:
            pass


class Recorder(ControllerMessages):
    """aiosmtpd server in this process that keeps each message's original bytes
    (envelope.original_content: un-stuffed, CRLF line endings, terminator excluded)."""

    label = "recorder"

    def __init__(self, data_size_limit=64 * 1024 * 1024):
        from aiosmtpd.controller import Controller   # Debian's python3-aiosmtpd

        self.messages = []
        self.lock = threading.Lock()
        recorder = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with recorder.lock:
                    recorder.messages.append({
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "mail_options": list(envelope.mail_options),
                        "data": bytes(envelope.original_content),
                    })
                    n = len(recorder.messages)
                return "250 2.0.0 Ok: recorded as REC%06d" % n

        last = None
        for _ in range(5):
            self.port = free_port()
            self.controller = Controller(Handler(), hostname=LOOPBACK, port=self.port,
                                         enable_SMTPUTF8=True, decode_data=False,
                                         data_size_limit=data_size_limit, ready_timeout=10)
            try:
                self.controller.start()
                return
            except Exception as e:   # port taken in between: try another
                last = e
        raise AssertionError("aiosmtpd recorder did not start: %r" % last)



class ScriptedConnection:
    def __init__(self, sock):
        self.sock = sock
        self.raw = bytearray()            # every byte received, in order
        self.commands = []                # command lines (bytes, without CRLF)
        self.messages = []                # un-stuffed message bodies that ended with CRLF.CRLF
        self.wire_messages = []           # the same, as on the wire (still dot-stuffed)
        self.data_bytes = bytearray()     # bytes received in DATA for the current message
        self.closed = threading.Event()   # set once the connection is over (either side)
        self.closed_by_us = False


class ScriptedServer:
    """A raw-socket server on 127.0.0.1:0: accepts connections, wraps each in
    `connection_class`, and runs `self._serve(conn)` on a thread of its own. Subclasses set
    their own attributes first, then call this __init__ (it starts accepting at once)."""

    def __init__(self, connection_class, backlog=64, join_timeout=5):
        self.connection_class = connection_class
        self.join_timeout = join_timeout
        self.connections = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(backlog)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.threads = []
        self.accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.accept_thread.start()

    def all_connections(self):
        with self.lock:
            return list(self.connections)

    def wait_for_connections(self, n, timeout=20.0):
        wait_until(lambda: len(self.all_connections()) >= n, timeout, "%d upstream connection(s)" % n)
        return self.all_connections()

    def received(self, conn, lifetime):
        """Each chunk the peer sends (also appended to conn.raw), until it closes, the server
        stops, or `lifetime` seconds pass (no connection outlives the test)."""
        sock = conn.sock
        sock.settimeout(0.2)
        deadline = time.monotonic() + lifetime
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            conn.raw += chunk
            yield chunk

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn = self.connection_class(sock)
            with self.lock:
                self.connections.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def stop(self):
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        self.accept_thread.join(timeout=5)
        for t in list(self.threads):
            t.join(timeout=self.join_timeout)


class ScriptedUpstream(ScriptedServer):
    """A raw-socket SMTP server that logs every byte it receives and can misbehave.

    behaviour:
      "normal"          answers like a permissive MTA (EHLO advertises PIPELINING, 8BITMIME,
                        SMTPUTF8, ENHANCEDSTATUSCODES); 250 to each complete message
      "die_mid_data"    closes the connection once `die_after` message bytes arrived in DATA
      "die_after_dot"   closes the connection, without replying, after a complete message
    """

    def __init__(self, behaviour="normal", die_after=1024, greeting=b"220 scripted.test ESMTP ready\r\n",
                 ehlo_extra=()):
        self.behaviour = behaviour
        self.ehlo_extra = b"".join(b"250-" + k + b"\r\n" for k in ehlo_extra)
        self.die_after = die_after
        self.greeting = greeting
        super().__init__(ScriptedConnection)

    # -- inspection
    def raw(self):
        return b"".join(bytes(c.raw) for c in self.all_connections())

    def messages(self):
        return [m for c in self.all_connections() for m in c.messages]

    def commands(self):
        return [cmd for c in self.all_connections() for cmd in c.commands]

    # -- server
    def _close(self, conn):
        conn.closed_by_us = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        conn.sock.close()

    def _serve(self, conn):
        sock = conn.sock
        try:
            sock.sendall(self.greeting)
            buf = b""
            in_data = False
            for chunk in self.received(conn, 600):   # no connection outlives the suite's timeout
                buf += chunk
                out = b""
                while True:
                    if in_data:
                        start = len(conn.data_bytes)
                        conn.data_bytes += buf
                        buf = b""
                        data = conn.data_bytes
                        if data.startswith(b".\r\n"):
                            cut, rest_at = 0, 3             # empty message
                        else:
                            i = data.find(b"\r\n.\r\n", max(0, start - 4))
                            cut, rest_at = (i + 2, i + 5) if i >= 0 else (-1, -1)
                        if cut < 0:
                            if (self.behaviour == "die_mid_data"
                                    and len(data) >= self.die_after):
                                if out:
                                    sock.sendall(out)
                                self._close(conn)
                                return
                            break
                        wire = bytes(data[:cut])
                        buf = bytes(data[rest_at:])
                        conn.data_bytes = bytearray()
                        conn.wire_messages.append(wire)
                        conn.messages.append(dot_unstuff(wire))
                        in_data = False
                        if self.behaviour in ("die_after_dot", "die_mid_data"):
                            if out:
                                sock.sendall(out)
                            self._close(conn)
                            return
                        out += b"250 2.0.0 Ok: queued as SCRIPTED%d\r\n" % len(conn.messages)
                        continue
                    if b"\r\n" not in buf:
                        break
                    line, buf = buf.split(b"\r\n", 1)
                    conn.commands.append(line)
                    verb = line.split(b" ", 1)[0].upper()
                    if verb == b"EHLO":
                        out += (b"250-scripted.test\r\n" + self.ehlo_extra +
                                b"250-PIPELINING\r\n250-8BITMIME\r\n"
                                b"250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n")
                    elif verb == b"HELO":
                        out += b"250 scripted.test\r\n"
                    elif verb == b"MAIL":
                        out += b"250 2.1.0 Ok\r\n"
                    elif verb == b"RCPT":
                        out += b"250 2.1.5 Ok\r\n"
                    elif verb == b"DATA":
                        out += b"354 End data with <CR><LF>.<CR><LF>\r\n"
                        in_data = True
                    elif verb in (b"RSET", b"NOOP"):
                        out += b"250 2.0.0 Ok\r\n"
                    elif verb == b"QUIT":
                        sock.sendall(out + b"221 2.0.0 Bye\r\n")
                        self._close(conn)
                        return
                    else:
                        out += b"502 5.5.2 Error: command not recognized\r\n"
                if out:
                    sock.sendall(out)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            conn.closed.set()


class ScriptedAnswers(ScriptedServer):
    """A small MTA on a raw socket whose every answer a test may replace: a hostile or broken
    upstream (tests/integration/test_hostile_upstream.py, test_failing_peers.py).

    answers: maps an upper-case verb (b"EHLO", b"MAIL", b"RCPT", b"DATA", ...; b"." for the
      end of data) to the bytes sent for it, to CLOSE (hang up without a word, at once) or to
      a callable(conn, line) returning either. Verbs not listed get ANSWERS' normal reply.
      DATA enters the message only when its answer starts with "354".
    greeting: bytes sent on connect (CLOSE: hang up at once; SILENT: never greet, only read).
    Records like ScriptedUpstream: conn.raw, conn.commands, conn.messages (un-stuffed)."""

    CLOSE = "close"
    SILENT = "silent"
    ANSWERS = {
        b"EHLO": b"250-scripted.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
        b"HELO": b"250 scripted.test\r\n",
        b"MAIL": b"250 2.1.0 Ok\r\n",
        b"RCPT": b"250 2.1.5 Ok\r\n",
        b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b".": b"250 2.0.0 Ok: queued as SCRIPTED\r\n",
        b"QUIT": b"221 2.0.0 Bye\r\n",
    }

    def __init__(self, answers=None, greeting=b"220 scripted.test ESMTP\r\n", lifetime=120):
        self.answers = dict(answers or {})
        self.greeting = greeting
        self.lifetime = lifetime
        super().__init__(ScriptedConnection)

    def _answer(self, conn, verb, line):
        answer = self.answers.get(verb, self.ANSWERS.get(verb, b"250 2.0.0 Ok\r\n"))
        return answer(conn, line) if callable(answer) else answer

    def _hang_up(self, conn):
        conn.closed_by_us = True
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _serve(self, conn):
        sock = conn.sock
        try:
            if self.greeting == self.CLOSE:
                return self._hang_up(conn)
            if self.greeting != self.SILENT:
                sock.sendall(self.greeting)
            buf, in_data = b"", False
            for chunk in self.received(conn, self.lifetime):
                if self.greeting == self.SILENT:
                    continue
                buf += chunk
                while True:
                    if in_data:
                        conn.data_bytes += buf
                        buf = b""
                        data = bytes(conn.data_bytes)
                        if data.startswith(b".\r\n"):
                            cut, rest_at = 0, 3
                        else:
                            i = data.find(b"\r\n.\r\n")
                            if i < 0:
                                break
                            cut, rest_at = i + 2, i + 5
                        conn.wire_messages.append(data[:cut])
                        conn.messages.append(dot_unstuff(data[:cut]))
                        conn.data_bytes = bytearray()
                        buf, in_data = data[rest_at:], False
                        verb, line = b".", b"."
                    else:
                        if b"\r\n" not in buf:
                            break
                        line, buf = buf.split(b"\r\n", 1)
                        conn.commands.append(line)
                        verb = line.split(b" ", 1)[0].upper()
                    answer = self._answer(conn, verb, line)
                    if answer == self.CLOSE:
                        return self._hang_up(conn)
                    sock.sendall(answer)
                    if verb == b"DATA" and answer.startswith(b"354"):
                        in_data = True
                    if verb == b"QUIT":
                        return self._hang_up(conn)
        except OSError:
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass
            conn.closed.set()


# ---------------------------------------------------------------- test base class

class IntegrationTest(unittest.TestCase):
    """Base class: a private work directory and cleanups for everything started."""

    maxDiff = 4000

    def setUp(self):
        binary = mailtap_bin()
        if not os.access(binary, os.X_OK):
            self.fail("mailtap binary not found at %s (set MAILTAP_BIN or build build-it)" % binary)
        self.workdir = tempfile.mkdtemp(prefix="mailtap-it-%s-" % self._testMethodName)
        if os.environ.get("MAILTAP_IT_KEEP"):
            sys.stderr.write("\n[work dir kept: %s]\n" % self.workdir)
        else:
            self.addCleanup(shutil.rmtree, self.workdir, True)

    # -- peers
    def start_mailtap(self, upstream="builtin", args=(), name="mailtap", **kw):
        m = Mailtap(self.workdir, upstream=upstream, args=args, name=name, **kw)
        self.addCleanup(m.stop)
        return m

    def start_smtp_sink(self, args=(), dump=True, name="smtp-sink"):
        s = SmtpSink(self.workdir, args=args, dump=dump, name=name)
        self.addCleanup(s.stop)
        return s

    def start_recorder(self, **kw):
        r = Recorder(**kw)
        self.addCleanup(r.stop)
        return r

    def start_scripted(self, behaviour="normal", **kw):
        s = ScriptedUpstream(behaviour, **kw)
        self.addCleanup(s.stop)
        return s

    def connect(self, port, timeout=20.0):
        c = SmtpClient(port, timeout)
        self.addCleanup(c.close)
        return c

    def greeted_client(self, port, ehlo="client.test"):
        """Connected, banner read, EHLO answered 250."""
        c = self.connect(port)
        banner = c.reply()
        self.assertEqual(banner.code, 220, banner)
        r = c.command("EHLO " + ehlo)
        self.assertEqual(r.code, 250, r)
        return c

    def quit(self, c):
        """QUIT -> 221, then the relay closes; we close too (so mailtap need not linger)."""
        self.assertReply(c.command("QUIT"), 221)
        self.assertTrue(c.closed_by_peer(20), "mailtap did not close the connection after QUIT")
        c.close()

    def write_file(self, name, data):
        path = os.path.join(self.workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def swaks(self, port, *args, timeout=180.0):
        """Runs swaks against 127.0.0.1:port; returns (exit code, transcript text)."""
        argv = [SWAKS, "--server", "%s:%d" % (LOOPBACK, port), "--helo", "swaks.test",
                "--timeout", "60", *args]
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        return r.returncode, r.stdout.decode("utf-8", "replace")

    # -- assertions
    def assertReply(self, reply, code, enhanced=None):
        self.assertEqual(reply.code, code, "expected %d, got %r" % (code, reply))
        if enhanced is not None:
            self.assertEqual(reply.enhanced, enhanced, "expected %s, got %r" % (enhanced, reply))

    def assertNoBareCrLf(self, data, what="data"):
        where = bare_cr_lf_positions(data)
        if where:
            i = where[0]
            self.fail("%s contains a bare CR/LF at offset %d: %r" % (what, i, data[max(0, i - 40):i + 40]))

    def assertCaptureComplete(self, cap):
        """Complete and well formed per captures/FORMAT.md: header first, exactly one end
        record, last, with complete=true, and no cut line."""
        problems = cap.problems()
        if problems:
            self.fail("capture %s is not complete: %s" % (os.path.basename(cap.path), "; ".join(problems)))

    def single_capture(self, mailtap, timeout=30.0, released=True):
        """The one capture of `mailtap`, once finished. released=True waits until mailtap has
        closed the file (the session is gone, nothing more can be appended); released=False
        only waits for the end record to be the last line."""
        if released:
            caps = mailtap.wait_captures(1, timeout)
        else:
            caps = wait_for_captures(mailtap.captures, 1, timeout)
        self.assertEqual(len(caps), 1, [c.path for c in caps])
        return caps[0]

    def assertSessionReleased(self, mailtap, cap, timeout=15.0):
        """mailtap lets go of a finished session: its capture file is closed (the writer closes
        it when the session object is destroyed, after at most the 2 s close linger)."""
        try:
            wait_until(lambda: os.path.realpath(cap.path) not in open_paths(mailtap.pid), timeout,
                       "mailtap to close %s" % os.path.basename(cap.path))
        except AssertionError as e:
            self.fail("session never released (capture file still open in mailtap): %s" % e)


def swaks_wire_message(data):
    """What swaks 20201014 sends for `--data @FILE` (FILE ending with a newline): line endings
    made CRLF, leading dots doubled, then one more CRLF before the terminating '.'."""
    return dot_stuff(crlf(data)) + b"\r\n"


# ---------------------------------------------------------------- fault injection (test_faults, test_scenarios)

SCENARIOS_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "policies", "scenarios"))


def fault_records(cap):
    """The capture's `fault` records, in file order (captures/FORMAT.md)."""
    return cap.of_type("fault")


def fault_summary(cap, fields=("rule", "fault_type", "decision", "phase")):
    """The capture's fault records as tuples of `fields`, in file order."""
    return [tuple(r.get(f) for f in fields) for r in fault_records(cap)]


def documented_end_reasons():
    """The end reasons captures/FORMAT.md lists in its "End reasons" table."""
    with open(os.path.join(HERE, "..", "..", "captures", "FORMAT.md")) as f:
        section = f.read().split("## End reasons", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))


_SWAKS_SERVER_RE = re.compile(r"^<[-~*]{1,2} +(\d{3}[- ]?.*)$")
_SWAKS_CLIENT_RE = re.compile(r"^ ?[-~*]{1,2}> ?(.*)$")


class SwaksTranscript:
    """swaks' transcript (its stdout) split into exchanges: (client line or None, Reply).

    Server lines are `<-  `, `<** ` (an unexpected code), `<~  `/`<~* ` (inside TLS); client
    lines are ` -> `/` ~> `. The reply to the greeting has None as its client line; a
    message's end-of-data reply has '.' (or swaks' "N lines sent" with --suppress-data)."""

    def __init__(self, text):
        self.text = text
        self.exchanges = []
        last_client = None
        lines = []
        for line in text.splitlines():
            m = _SWAKS_SERVER_RE.match(line)
            if m:
                raw = m.group(1).encode("utf-8", "replace")
                lines.append(raw)
                if raw[3:4] != b"-":
                    self.exchanges.append((last_client, Reply(lines)))
                    lines = []
                    last_client = None
                continue
            m = _SWAKS_CLIENT_RE.match(line)
            if m:
                last_client = m.group(1)

    @property
    def greeting(self):
        return self.exchanges[0][1] if self.exchanges and self.exchanges[0][0] is None else None

    def replies_to(self, prefix):
        """Replies to client lines starting with `prefix` (case-insensitive), in order."""
        p = prefix.upper()
        return [r for c, r in self.exchanges if c is not None and c.upper().startswith(p)]

    def reply_to(self, prefix):
        """The one reply to a client line starting with `prefix`; AssertionError if not one."""
        rs = self.replies_to(prefix)
        if len(rs) != 1:
            raise AssertionError("expected one reply to %r in swaks transcript, got %d:\n%s"
                                 % (prefix, len(rs), self.text[-3000:]))
        return rs[0]

    def end_of_data_replies(self):
        return [r for c, r in self.exchanges
                if c is not None and (c == "." or re.match(r"^\d+ lines sent$", c))]


def recv_outcome(sock, timeout):
    """Reads from `sock` until EOF, RST or `timeout` seconds: returns (outcome, data) with
    outcome "eof", "reset" or "timeout" and data every byte received before it."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout", data
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return "timeout", data
        except ConnectionResetError:
            return "reset", data
        if not chunk:
            return "eof", data
        data += chunk
