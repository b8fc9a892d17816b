"""pytest plugin: a mailtap for the test session, its faults reset around every test.

Loaded by its entry point once the package is installed, or with
`-p mailtap_client.pytest_plugin`. Fixtures:

  mailtap          function scope: the Mailtap client, faults reset before and after the test,
                   sessions marked (wait_for_session sees only this test's); .smtp is the
                   relay's (host, port) for the application under test
  mailtap_server   session scope: the same client, shared by every test (no reset)
  mailtap_upstream session scope: what a started mailtap relays to ("builtin", or HOST:PORT);
                   override it in a conftest.py to start your own mail server first

Options (and their environment variables):

  --mailtap-url URL        attach to a running mailtap's admin API ($MAILTAP_URL) instead of
                           starting one; its token: $MAILTAP_ADMIN_TOKEN_FILE or $MAILTAP_ADMIN_TOKEN
  --mailtap-smtp HOST:PORT that mailtap's SMTP listener, when attached ($MAILTAP_SMTP)
  --mailtap-bin PATH       the binary to start ($MAILTAP_BIN; default: mailtap on PATH)
  --mailtap-upstream H:P   what the started one relays to ($MAILTAP_UPSTREAM; default builtin)
  --mailtap-arg ARG        one more `mailtap run` option for the started one (repeatable)
"""

import os

import pytest

from mailtap_client.client import Mailtap
from mailtap_client.process import MailtapProcess


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


@pytest.fixture(scope="session")
def mailtap_upstream(pytestconfig):
    """What a started mailtap relays to. Override in a conftest.py (session scope) to start a
    mail server of your own and return its "HOST:PORT"."""
    return pytestconfig.getoption("mailtap_upstream") or "builtin"


@pytest.fixture(scope="session")
def mailtap_server(pytestconfig, mailtap_upstream):
    """The session's mailtap client: attached to --mailtap-url, or of a mailtap started here."""
    url = pytestconfig.getoption("mailtap_url")
    if url:
        smtp = pytestconfig.getoption("mailtap_smtp")
        client = Mailtap(url, smtp=_host_port(smtp) if smtp else None)
        if not client.healthy():
            pytest.exit("no mailtap answers at --mailtap-url %s (or its token is missing)" % url, returncode=4)
        yield client
        return
    process = MailtapProcess(binary=pytestconfig.getoption("mailtap_bin"), upstream=mailtap_upstream,
                             args=pytestconfig.getoption("mailtap_arg"))
    process.start()
    try:
        yield process.client
    finally:
        process.stop()


@pytest.fixture
def mailtap(mailtap_server):
    """The client for one test: no fault rule at its start or after it, and
    wait_for_session looking only at the sessions it made."""
    mailtap_server.reset_faults()
    mailtap_server.mark()
    try:
        yield mailtap_server
    finally:
        mailtap_server.reset_faults()
