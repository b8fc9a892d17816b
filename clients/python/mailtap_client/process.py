"""A `mailtap run` of its own on free loopback ports, for a test session: SMTP and the admin
API both on port 0, their ports read from the two lines mailtap prints on stdout when it is
ready (README.md of mailtap, "Command line"), captures in a directory of its own."""

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time

from mailtap_client.client import Mailtap

READY = re.compile(r"^mailtap: listening on (\S+):(\d+)(?:, tls on \S+)?, upstream (\S+), captures in (.+)$")
ADMIN = re.compile(r"^mailtap: admin API on (http://\S+)$")


def find_binary(binary=None):
    """`binary`, else $MAILTAP_BIN, else `mailtap` on PATH. FileNotFoundError when none is."""
    candidate = binary or os.environ.get("MAILTAP_BIN") or shutil.which("mailtap")
    if not candidate or not os.access(candidate, os.X_OK):
        raise FileNotFoundError("no mailtap binary: set MAILTAP_BIN or --mailtap-bin, or put mailtap on PATH "
                                "(got %r)" % candidate)
    return candidate


class MailtapProcess:
    """Starts `mailtap run` and stops it (a context manager too).

    upstream: "HOST:PORT" of the mail server to relay to, or "builtin" (accepts everything,
    delivers nowhere). token: the admin token to give it (through $MAILTAP_ADMIN_TOKEN, never
    on the command line). args: more `mailtap run` options. workdir: where the captures and
    mailtap's log go (default: a new temporary directory, removed by stop()).

    After start(): .client (a Mailtap), .smtp (host, port), .admin_url, .captures."""

    def __init__(self, binary=None, upstream="builtin", token=None, args=(), workdir=None, ready_timeout=20.0):
        self.binary = find_binary(binary)
        self.upstream = upstream
        self.token = token
        self.args = list(args)
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="mailtap-")
        self.captures = os.path.join(self.workdir, "captures")
        self.log_path = os.path.join(self.workdir, "mailtap.log")
        self.ready_timeout = ready_timeout
        self.proc = None
        self.client = None
        self.smtp = None
        self.admin_url = None

    def start(self):
        argv = [self.binary, "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--upstream", self.upstream,
                "--captures", self.captures, *self.args]
        env = dict(os.environ)
        env.pop("MAILTAP_ADMIN_TOKEN_FILE", None)
        env.pop("MAILTAP_ADMIN_TOKEN", None)
        if self.token:
            env["MAILTAP_ADMIN_TOKEN"] = self.token
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                     env=env)
        try:
            ready, admin = self._lines(2)
            m, a = READY.match(ready), ADMIN.match(admin)
            if not m or not a:
                raise RuntimeError("unexpected output from mailtap: %r, %r" % (ready, admin))
        except Exception:
            self.stop()
            raise
        self.smtp = (m.group(1), int(m.group(2)))
        self.admin_url = a.group(1)
        self.client = Mailtap(self.admin_url, token=self.token or "", smtp=self.smtp, local=True)
        return self

    def _lines(self, count):
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + self.ready_timeout
        data = b""
        while data.count(b"\n") < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("mailtap printed no ready line in %.0f s; its log: %s"
                                   % (self.ready_timeout, self.log_text()[-2000:]))
            if select.select([fd], [], [], min(left, 0.5))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise RuntimeError("mailtap exited %s before it was ready: %s"
                                       % (self.proc.returncode, self.log_text()[-2000:]))
                data += chunk
        return [line.decode("utf-8", "replace") for line in data.split(b"\n")[:count]]

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, grace=10.0):
        """SIGTERM (it drains), SIGKILL after `grace` seconds; the exit code."""
        code = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            code = self.proc.returncode
            self.proc.stdout.close()
            self._log.close()
            self.proc = None
        if self._own_workdir and not os.environ.get("MAILTAP_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
