"""The relay the plugin starts, over its life: it ends with its pytest (a SIGTERM, as a
cancelled CI job gets, or a SIGKILL), stops within its short drain with a message in flight,
keeps everything it writes in its temporary directory, and leaves that directory, named, as
evidence when a test failed or the relay died."""

import json
import os
import shutil
import signal
import time

from inner import FIND_RELAY, end_leftover_relay, gone_within, run_inner, start_inner, wait_for_file

WAITS_FOR_ITS_END = FIND_RELAY + '''
import time

def test_waits_for_the_signal(mailtap):
    note("relay", "%d %s" % (relay_pid(), relay_workdir()))
    time.sleep(60)
'''


def _signal_a_running_pytest(pytester, sig):
    """Starts the inner pytest, waits until its test runs, sends it `sig`; the relay's pid and
    workdir, and the pytest's exit status."""
    pytester.makepyfile(WAITS_FOR_ITS_END)
    run = start_inner(pytester)
    try:
        pid, workdir = wait_for_file(str(pytester.path / "relay"), proc=run).split(" ", 1)
        run.send_signal(sig)
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    return int(pid), workdir, run.returncode


def test_a_sigterm_to_pytest_stops_its_relay_and_removes_its_directory(pytester):
    pid, workdir, status = _signal_a_running_pytest(pytester, signal.SIGTERM)
    try:
        assert status == -signal.SIGTERM
        assert gone_within(pid, 10)
        assert not os.path.exists(workdir)
    finally:
        end_leftover_relay(pid)
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_sigkilled_pytest_takes_its_relay_with_it(pytester):
    pid, workdir, status = _signal_a_running_pytest(pytester, signal.SIGKILL)
    try:
        assert status == -signal.SIGKILL
        assert gone_within(pid, 15)
    finally:
        end_leftover_relay(pid)
        shutil.rmtree(workdir, ignore_errors=True)


LEAVES_A_MESSAGE_IN_FLIGHT = FIND_RELAY + '''
import socket
import time

KEEP = []

def test_leaves_a_message_half_sent(mailtap):
    note("workdir", relay_workdir())
    s = socket.create_connection(mailtap.smtp, timeout=30)
    replies = s.makefile("rb")
    replies.readline()
    for command in (b"EHLO app.test", b"MAIL FROM:<a@example.test>", b"RCPT TO:<b@example.test>", b"DATA"):
        s.sendall(command + b"\\r\\n")
        while replies.readline()[3:4] == b"-":
            pass
    s.sendall(b"Subject: half\\r\\n\\r\\nnot finished\\r\\n")
    KEEP.append(s)   # an application's connection still sending when the test session ends
    note("ended", time.time())
'''


def test_a_message_in_flight_at_the_end_is_drained_not_killed(pytester, monkeypatch):
    monkeypatch.setenv("MAILTAP_KEEP", "1")
    pytester.makepyfile(LEAVES_A_MESSAGE_IN_FLIGHT)
    run_inner(pytester).assert_outcomes(passed=1)
    teardown = time.time() - float((pytester.path / "ended").read_text())   # the relay's stop, mostly
    workdir = (pytester.path / "workdir").read_text()
    try:
        [capture] = [f for f in os.listdir(os.path.join(workdir, "captures")) if f.endswith(".jsonl")]
        with open(os.path.join(workdir, "captures", capture), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        assert [(r["type"], r["reason"]) for r in records if r["type"] == "end"] == [("end", "drain")]
        assert teardown < 9   # the old stop waited 10 s, then SIGKILL
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_relay_writes_nothing_under_home(pytester, monkeypatch):
    """Its self-signed TLS pair goes into its own directory, not ~/.local/state/mailtap
    (pytester points HOME at its directory)."""
    pytester.makepyfile('''
import smtplib

def test_starttls(mailtap):
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as s:
        assert s.starttls()[0] == 220
''')
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    run_inner(pytester).assert_outcomes(passed=1)
    assert os.environ["HOME"] == str(pytester.path)
    assert not (pytester.path / ".local").exists()


FAILS = FIND_RELAY + '''
def test_fails(mailtap):
    note("workdir", relay_workdir())
    assert False
'''

THE_RELAY_DIES = FIND_RELAY + '''
import signal
import pytest
from mailtap_client import MailtapError

def test_1_the_relay_dies(mailtap):
    note("workdir", relay_workdir())
    pid = relay_pid()
    os.kill(pid, signal.SIGKILL)
    while os.path.exists("/proc/%d/stat" % pid) and open("/proc/%d/stat" % pid).read().split(") ")[1][0] != "Z":
        pass

def test_2_the_error_says_so(mailtap_server):
    with pytest.raises(MailtapError) as e:
        mailtap_server.faults()
    for what in ("killed by SIGKILL", open("workdir").read(), "the end of its log"):
        assert what in str(e.value)
'''


def test_a_failed_test_keeps_the_relays_directory_and_names_it(pytester):
    pytester.makepyfile(FAILS)
    result = run_inner(pytester)
    workdir = (pytester.path / "workdir").read_text()
    try:
        result.assert_outcomes(failed=1)
        assert os.path.isfile(os.path.join(workdir, "mailtap.log"))
        assert os.path.isdir(os.path.join(workdir, "captures"))
        assert workdir in result.stdout.str()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_relay_that_died_is_named_in_the_error_and_its_directory_kept(pytester):
    pytester.makepyfile(THE_RELAY_DIES)
    result = run_inner(pytester)
    workdir = (pytester.path / "workdir").read_text()
    try:
        result.assert_outcomes(passed=2, errors=1)   # the error: cleaning up after test_1
        assert os.path.isfile(os.path.join(workdir, "mailtap.log"))
        assert workdir in result.stdout.str()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
