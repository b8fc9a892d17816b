"""A `mailtap run` of its own on free loopback ports, for a test session: SMTP and the admin
API both on port 0, their ports read from the two lines mailtap prints on stdout when it is
ready (README.md of mailtap, "Command line"), and everything it writes in one directory of
its own (captures, its log, the self-signed TLS pair, its config). The relay dies with the
process that started it (Linux), drains for a short time when stopped, and its directory is
kept as evidence when it died on its own."""

import ctypes
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from mailtap_client.client import Mailtap

READY = re.compile(r"^mailtap: listening on (\S+):(\d+)(?:, tls on \S+)?, upstream (\S+), captures in (.+)$")
ADMIN = re.compile(r"^mailtap: admin API on (http://\S+)$")

# How long the relay finishes the messages in flight when stopped (the config's
# timeouts.drain; `mailtap run` has no flag for it). The relay's own default is 30 s.
DRAIN = 5
RELAY_DEFAULT_DRAIN = 30
# After the drain, a second SIGTERM stops the relay at once; SIGKILL only if that fails.
SECOND_TERM_WAIT = 5
LOG_TAIL_LINES = 20
# prctl(2): the signal a child gets when the thread that started it ends.
PR_SET_PDEATHSIG = 1


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
    on the command line). args: more `mailtap run` options. workdir: where the captures,
    mailtap.log, the generated TLS pair (state/) and the config go (default: a new temporary
    directory, removed by stop() unless kept: see stop()).

    The relay gets a config (workdir/mailtap.toml) with `[timeouts] drain` = DRAIN seconds,
    unless `args` has a --config of its own (then its drain, 30 s by default). On Linux it gets
    SIGTERM when the thread that started it ends (prctl PR_SET_PDEATHSIG): start it from a
    thread that lives as long as it should.

    After start(): .client (a Mailtap), .smtp (host, port), .admin_url, .captures, .pid."""

    def __init__(self, binary=None, upstream="builtin", token=None, args=(), workdir=None, ready_timeout=20.0):
        self.binary = find_binary(binary)
        self.upstream = upstream
        self.token = token
        self.args = list(args)
        self._own_workdir = workdir is None
        self.workdir = os.path.abspath(workdir or tempfile.mkdtemp(prefix="mailtap-"))
        os.makedirs(self.workdir, exist_ok=True)
        self.captures = os.path.join(self.workdir, "captures")
        self.log_path = os.path.join(self.workdir, "mailtap.log")
        self.ready_timeout = ready_timeout
        self.drain = RELAY_DEFAULT_DRAIN if _has_config(self.args) else DRAIN
        self.proc = None
        self.pid = None
        self.client = None
        self.smtp = None
        self.admin_url = None
        self.exit_status = None   # set when the relay has exited
        self.died = False         # it exited before stop() asked it to
        self.kept = False         # stop() left its own temporary workdir in place

    def start(self):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                     env=self._environment(), preexec_fn=_dies_with_parent(os.getpid()))
        self.pid = self.proc.pid
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
        self.client.explain_unreachable = self.exit_report
        return self

    def _argv(self):
        argv = [self.binary, "run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--upstream", self.upstream,
                "--captures", self.captures]
        if not _has_config(self.args):
            argv += ["--config", self._write_config()]
        return argv + self.args

    def _write_config(self):
        path = os.path.join(self.workdir, "mailtap.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write("# Written by mailtap_client.MailtapProcess: a short drain at stop.\n"
                    "[timeouts]\ndrain = %d\n" % self.drain)
        return path

    def _environment(self):
        """The relay's environment: the token given here, none inherited; the state directory
        (the generated TLS pair, README "Configuration", [tls] state_dir) in the workdir."""
        env = dict(os.environ)
        env.pop("MAILTAP_ADMIN_TOKEN_FILE", None)
        env.pop("MAILTAP_ADMIN_TOKEN", None)
        if self.token:
            env["MAILTAP_ADMIN_TOKEN"] = self.token
        env["XDG_STATE_HOME"] = os.path.join(self.workdir, "state")
        return env

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

    def exit_report(self):
        """None while the relay runs; once it exited, one paragraph: its pid and exit status,
        where its workdir is, and the end of its log."""
        status = self.proc.poll() if self.proc is not None else self.exit_status
        if status is None:
            return None
        tail = "\n".join(self.log_text().splitlines()[-LOG_TAIL_LINES:])
        where = "its workdir %s%s" % (self.workdir, "" if os.path.isdir(self.workdir) else " (removed)")
        return "mailtap (pid %s) %s; %s; the end of its log:\n%s" % (self.pid, _describe_status(status), where, tail)

    def stop(self, grace=None, keep=False):
        """Stops the relay and returns its exit status: SIGTERM, which drains (the messages in
        flight have `drain` seconds), then a second SIGTERM after `grace` seconds (default:
        the drain and 5 s), which stops it at once, and SIGKILL only if that fails.

        Removes its own workdir, unless `keep`, $MAILTAP_KEEP is set, or the relay had exited
        on its own before (died: the evidence stays). `.kept` says which it was."""
        if self.proc:
            self.died = self.proc.poll() is not None
            if not self.died:
                self._terminate(self.drain + SECOND_TERM_WAIT if grace is None else grace)
            self.exit_status = self.proc.returncode
            self.proc.stdout.close()
            self._log.close()
            self.proc = None
        self.kept = self._own_workdir and bool(keep or self.died or os.environ.get("MAILTAP_KEEP"))
        if self._own_workdir and not self.kept:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.exit_status

    def _terminate(self, grace):
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, SECOND_TERM_WAIT), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                return
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _has_config(args):
    return any(a == "--config" or a.startswith("--config=") for a in args)


def _describe_status(status):
    if status < 0:
        try:
            return "was killed by %s" % signal.Signals(-status).name
        except ValueError:
            return "was killed by signal %d" % -status
    return "exited with status %d" % status


def _dies_with_parent(parent_pid):
    """A preexec_fn that makes the child get SIGTERM when its parent ends (Linux prctl
    PR_SET_PDEATHSIG; None elsewhere), and end at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec
