"""pytest plugin: a mailtap for the test session, the rules a test armed removed around it.

Loaded by its entry point once the package is installed, or with
`-p mailtap_client.pytest_plugin`. Fixtures:

  mailtap          function scope: the Mailtap client; before and after the test it removes
                   the rules armed through it (and on a relay it started, every rule armed over
                   the API), never the relay's config and scenario files' rules; sessions
                   marked (wait_for_session sees only those started during the test); .smtp is
                   the relay's (host, port) for the application under test
  mailtap_server   session scope: the same client, shared by every test (no reset)
  mailtap_upstream session scope: what a started mailtap relays to ("builtin", or HOST:PORT);
                   override it in a conftest.py to start your own mail server first

A rule applies to the SMTP sessions that open after it is armed: a connection opened before
(a pooled one) keeps the rules it opened with, and removing a rule does not take it from it.

Options (and their environment variables):

  --mailtap-url URL        attach to a running mailtap's admin API ($MAILTAP_URL) instead of
                           starting one; its token: $MAILTAP_ADMIN_TOKEN_FILE or $MAILTAP_ADMIN_TOKEN
  --mailtap-smtp HOST:PORT that mailtap's SMTP listener, when attached ($MAILTAP_SMTP)
  --mailtap-bin PATH       the binary to start ($MAILTAP_BIN; default: mailtap on PATH)
  --mailtap-upstream H:P   what the started one relays to ($MAILTAP_UPSTREAM; default builtin)
  --mailtap-arg ARG        one more `mailtap run` option for the started one (repeatable)

The started relay lives in a temporary directory (captures, mailtap.log, its TLS pair), which
is kept and named at the end when a test failed or the relay died ($MAILTAP_KEEP: always). A
SIGTERM to pytest (a cancelled CI job) stops it first.
"""

import os
import signal

import pytest

from mailtap_client.client import Mailtap
from mailtap_client.process import MailtapProcess

# On a SIGTERM, the relay gets this long to stop before a second SIGTERM stops it at once.
SIGTERM_GRACE = 2.0

_kept = pytest.StashKey()


def pytest_addoption(parser):
    group = parser.getgroup("mailtap", "mailtap SMTP fault injection (mailtap_client)")
    group.addoption("--mailtap-url", default=os.environ.get("MAILTAP_URL"),
                    help="attach to the admin API of a running mailtap (default $MAILTAP_URL) instead of starting one")
    group.addoption("--mailtap-smtp", default=os.environ.get("MAILTAP_SMTP"),
                    help="HOST:PORT of the attached mailtap's SMTP listener (default $MAILTAP_SMTP)")
    group.addoption("--mailtap-bin", default=None, help="the mailtap binary (default $MAILTAP_BIN, else PATH)")
    group.addoption("--mailtap-upstream", default=os.environ.get("MAILTAP_UPSTREAM"),
                    help="HOST:PORT a started mailtap relays to (default $MAILTAP_UPSTREAM, else builtin)")
    group.addoption("--mailtap-arg", action="append", default=[],
                    help="one more `mailtap run` option for a started mailtap (repeatable)")


def _host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _Relay:
    """The session's relay: its client, and the process when the plugin started it (None when
    attached)."""

    def __init__(self, client, process=None):
        self.client = client
        self.process = process

    def clean(self):
        """Removes the rules armed through the client; on a relay of the plugin's own, every
        rule armed over the API too (nobody else uses it). The config's rules stay."""
        self.client.remove_armed()
        if self.process is not None:
            self.client.remove_api_rules()


@pytest.fixture(scope="session")
def mailtap_upstream(pytestconfig):
    """What a started mailtap relays to. Override in a conftest.py (session scope) to start a
    mail server of your own and return its "HOST:PORT"."""
    return pytestconfig.getoption("mailtap_upstream") or "builtin"


@pytest.fixture(scope="session")
def _mailtap_relay(request, pytestconfig, mailtap_upstream):
    """The relay of the test session: attached to, or started here and stopped at the end
    (on a SIGTERM too), its directory kept when a test failed."""
    url = pytestconfig.getoption("mailtap_url")
    if url:
        yield _Relay(_attached_client(url, pytestconfig.getoption("mailtap_smtp")))
        return
    process = MailtapProcess(binary=pytestconfig.getoption("mailtap_bin"), upstream=mailtap_upstream,
                             args=pytestconfig.getoption("mailtap_arg"))
    process.start()
    restore = _stop_on_sigterm(process)
    try:
        yield _Relay(process.client, process)
    finally:
        restore()
        process.stop(keep=request.session.testsfailed > 0)
        if process.kept:
            pytestconfig.stash[_kept] = _kept_line(process, request.session.testsfailed)


def _attached_client(url, smtp):
    client = Mailtap(url, smtp=_host_port(smtp) if smtp else None)
    client.smtp_missing = "attached with --mailtap-url, the plugin needs --mailtap-smtp HOST:PORT (or $MAILTAP_SMTP)"
    if not client.healthy():
        pytest.exit("no mailtap answers at --mailtap-url %s (or its token is missing)" % url, returncode=4)
    return client


@pytest.fixture(scope="session")
def mailtap_server(_mailtap_relay):
    """The session's mailtap client: attached to --mailtap-url, or of a mailtap started here."""
    return _mailtap_relay.client


@pytest.fixture
def mailtap(_mailtap_relay):
    """The client for one test: none of the rules armed through it at its start or after it
    (on the plugin's own relay, none armed over the API at all), and wait_for_session looking
    only at the sessions started since its start."""
    _mailtap_relay.clean()
    _mailtap_relay.client.mark()
    try:
        yield _mailtap_relay.client
    finally:
        _mailtap_relay.clean()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that used the plugin's own relay gets a section naming its directory,
    which is kept (shown under pytest-xdist too, where the workers' summaries are not)."""
    outcome = yield
    report = outcome.get_result()
    relay = getattr(item, "funcargs", {}).get("_mailtap_relay")
    if report.failed and relay is not None and relay.process is not None:
        report.sections.append(("mailtap", "the relay's directory (kept): %s" % relay.process.workdir))


def pytest_terminal_summary(terminalreporter, config):
    line = config.stash.get(_kept, None)
    if line:
        terminalreporter.write_sep("-", "mailtap")
        terminalreporter.write_line(line)


def _kept_line(process, failed):
    if process.died:
        why = "the relay died: %s" % process.exit_report()
    elif failed:
        why = "%d test(s) failed" % failed
    else:
        why = "MAILTAP_KEEP is set"
    return "mailtap: kept %s (captures, mailtap.log): %s" % (process.workdir, why)


def _stop_on_sigterm(process):
    """Until the returned function is called, a SIGTERM to this process stops the relay first
    (and removes its directory, unless MAILTAP_KEEP), then does what it did before: the
    previous handler, or the default (the process ends). Nothing when SIGTERM is ignored, or
    off the main thread, where Python cannot set a handler."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN or previous is None:
        return lambda: None

    def on_sigterm(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        process.stop(grace=SIGTERM_GRACE)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)
