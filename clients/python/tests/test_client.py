"""The Python client and pytest plugin against a real mailtap relaying to a real upstream
(aiosmtpd, conftest.py), with smtplib and swaks as the application under test: faults armed,
hit, counted, removed and reset; sessions listed, read and downloaded; waits that succeed and
waits that run out; live events; metrics; a token-protected relay; the plugin itself (reset
between tests, attach to a running relay) run by pytester in a pytest of its own; the READMEs'
example test; and `pip install` of the package."""

import json
import os
import re
import shlex
import shutil
import smtplib
import subprocess
import time

import pytest

from inner import run_inner
from mailtap_client import Mailtap, MailtapError, MailtapProcess, MailtapTimeout, Session, find_binary

SWAKS = "/usr/bin/swaks"


def send(mailtap, sender, recipients, body="Subject: hi\r\n\r\nhello\r\n"):
    """The application: smtplib through the relay. Returns the recipients it refused."""
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as smtp:
        smtp.ehlo("app.test")
        return smtp.sendmail(sender, recipients, body)


def test_the_next_rcpt_to_an_address_gets_452_once_and_the_capture_shows_it(mailtap, upstream):
    mailtap.next_rcpt("x@y.example", 452, enhanced="4.2.2", text="Mailbox full", name="full")
    assert [f["name"] for f in mailtap.faults()] == ["full"]
    refused = send(mailtap, "app@example.test", ["ok@example.test", "x@y.example"])
    assert refused == {"x@y.example": (452, b"4.2.2 Mailbox full")}

    s = mailtap.wait_for_session(lambda s: "x@y.example" in s.recipients)
    assert s.rcpt_codes == [250, 452]
    assert s.outcome == "delivered"
    assert [(f["rule"], f["fault_type"], f["phase"]) for f in s.faults] == [("full", "reply", "rcpt")]
    assert upstream.received()[-1]["rcpt_tos"] == ["ok@example.test"]
    assert mailtap.counters() == {"full": 1}

    # "The next" is one: the second message gets through whole.
    assert send(mailtap, "app@example.test", ["x@y.example"]) == {}
    s = mailtap.wait_for_session(lambda s: s.rcpt_codes == [250])
    assert s.recipients == ["x@y.example"]
    assert upstream.received()[-1]["rcpt_tos"] == ["x@y.example"]


def test_rules_as_dicts_or_toml_are_listed_counted_removed_and_reset(mailtap):
    assert mailtap.faults() == []
    assert mailtap.add_faults([{"name": "slow", "type": "delay", "phase": "mail", "delay": "10ms"},
                               {"name": "greylist", "type": "reply", "phase": "rcpt", "code": 451,
                                "sender": "*@grey.example"}]) == ["slow", "greylist"]
    assert mailtap.add_faults('[[fault]]\nname = "no-data"\ntype = "reply"\nphase = "data"\ncode = 554\n') \
        == ["no-data"]
    assert sorted(f["name"] for f in mailtap.faults()) == ["greylist", "no-data", "slow"]

    with pytest.raises(MailtapError) as taken:
        mailtap.add_fault({"name": "slow", "type": "delay", "phase": "mail", "delay": "1s"})
    assert taken.value.status == 409
    with pytest.raises(MailtapError) as bad:
        mailtap.add_fault({"name": "bad", "type": "reply", "phase": "rcpt", "code": 999})
    assert bad.value.status == 400 and "code" in bad.value.message
    with pytest.raises(MailtapError) as missing:
        mailtap.remove_fault("nothing")
    assert missing.value.status == 404

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mailtap, "a@grey.example", ["b@example.test"])
    assert mailtap.counters()["greylist"] == 1
    mailtap.remove_fault("greylist")
    assert sorted(f["name"] for f in mailtap.faults()) == ["no-data", "slow"]
    assert mailtap.reset_faults() == 2
    assert mailtap.faults() == [] and mailtap.counters() == {}


def test_a_scenario_file_loads_by_path(mailtap, tmp_path):
    scenario = tmp_path / "quota.toml"
    scenario.write_text('[[fault]]\nname = "quota"\ntype = "reply"\nphase = "mail"\ncode = 452\n')
    assert mailtap.load_scenario(str(scenario)) == ["quota"]
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(mailtap, "a@example.test", ["b@example.test"])


def test_a_relative_scenario_path_is_the_relays_unless_this_process_started_it(tmp_path, monkeypatch):
    relay_dir, client_dir, work = tmp_path / "relay", tmp_path / "client", tmp_path / "work"
    for d in (relay_dir, client_dir, work):
        d.mkdir()
    (relay_dir / "quota.toml").write_text('[[fault]]\nname = "quota"\ntype = "reply"\nphase = "mail"\ncode = 452\n')
    (client_dir / "grey.toml").write_text('[[fault]]\nname = "grey"\ntype = "reply"\nphase = "rcpt"\ncode = 451\n')
    monkeypatch.chdir(relay_dir)
    with MailtapProcess(workdir=str(work)) as relay:   # its working directory: relay/
        monkeypatch.chdir(client_dir)
        assert Mailtap(relay.admin_url, token="").load_scenario("quota.toml") == ["quota"]   # relay/quota.toml
        assert relay.client.load_scenario("grey.toml") == ["grey"]                          # client/grey.toml


def test_rcpt_replies_pair_recipients_with_codes_where_rcpt_codes_cannot(mailtap):
    """RCPTs pipelined behind a MAIL that a rule refuses get no code of their own in the
    capture: the flat rcpt_codes list is shorter than the recipients."""
    mailtap.reply("mail", 452, sender="first@example.test")
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as smtp:
        smtp.ehlo("app.test")
        smtp.send(b"MAIL FROM:<first@example.test>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n")
        assert [smtp.getreply()[0] for _ in range(3)][0] == 452
        assert smtp.sendmail("second@example.test", ["c@example.test"], "Subject: x\r\n\r\nx\r\n") == {}
    s = mailtap.wait_for_session(lambda s: "c@example.test" in s.recipients)
    assert s.recipients == ["a@example.test", "b@example.test", "c@example.test"]
    assert s.rcpt_codes == [250]
    assert s.rcpt_replies == [("a@example.test", None), ("b@example.test", None), ("c@example.test", 250)]
    assert Session({"transactions": [{"rcpt_to": ["x@y", "z@y"], "rcpt_codes": [452]}]}).rcpt_replies == \
        [("x@y", 452), ("z@y", None)]


def test_sessions_are_listed_read_and_downloaded_after_swaks_sends(mailtap, upstream):
    host, port = mailtap.smtp
    r = subprocess.run([SWAKS, "--server", "%s:%d" % (host, port), "--from", "swaks@example.test",
                        "--to", "one@example.test", "--helo", "swaks.test", "--timeout", "30"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert r.returncode == 0, r.stdout
    s = mailtap.wait_for_session(lambda s: s.senders == ["swaks@example.test"])
    rows = mailtap.sessions(limit=5)
    assert rows[0]["id"] == s.id and rows[0]["outcome"] == "delivered" and rows[0]["complete"]
    assert mailtap.session(s.id) == s
    assert s.final_replies == [(250, "Ok: queued")]
    records = [json.loads(line) for line in mailtap.raw(s.id).splitlines()]
    assert records[0]["session"] == s.id
    assert s.id in [r["id"] for r in mailtap.sessions(outcome="delivered", limit=500)]
    assert s.id not in [r["id"] for r in mailtap.sessions(outcome="rejected", limit=500)]
    with pytest.raises(MailtapError) as none:
        mailtap.session("no-such-session")
    assert none.value.status == 404


def test_wait_for_session_runs_out_when_nothing_matches(mailtap):
    send(mailtap, "a@example.test", ["b@example.test"])
    started = time.monotonic()
    with pytest.raises(MailtapTimeout):
        mailtap.wait_for_session(lambda s: "nobody@example.test" in s.recipients, timeout=1.0)
    assert time.monotonic() - started < 5
    # The session that did come is there for a predicate that wants it.
    assert mailtap.wait_for_session(timeout=10).recipients == ["b@example.test"]


def test_metrics_and_health(mailtap):
    assert mailtap.healthy() and mailtap.ready()
    before = mailtap.metric("mailtap_sessions_total")
    send(mailtap, "a@example.test", ["b@example.test"])
    mailtap.wait_for_session()
    assert mailtap.metric("mailtap_sessions_total") == before + 1
    assert mailtap.metric("mailtap_captures_total", result="complete") >= 1
    assert mailtap.metric("mailtap_no_such_metric") is None


def test_a_token_protected_relay_wants_the_token(tmp_path):
    token = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    with MailtapProcess(token=token, workdir=str(tmp_path)) as relay:
        assert relay.client.faults() == []
        with pytest.raises(MailtapError) as refused:
            Mailtap(relay.admin_url, token="").faults()
        assert refused.value.status == 401
        with pytest.raises(MailtapError) as wrong:
            Mailtap(relay.admin_url, token="a" * 32).faults()
        assert wrong.value.status == 401
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        os.environ["MAILTAP_ADMIN_TOKEN_FILE"] = str(token_file)
        try:
            assert Mailtap(relay.admin_url).faults() == []   # the token of the environment
        finally:
            del os.environ["MAILTAP_ADMIN_TOKEN_FILE"]


def test_an_unreachable_api_is_an_error_with_status_0():
    with pytest.raises(MailtapError) as e:
        Mailtap("http://127.0.0.1:1", token="", timeout=5).faults()
    assert e.value.status == 0
    assert not Mailtap("http://127.0.0.1:1", token="", timeout=5).healthy()


INNER_TESTS = '''
import smtplib

def test_arms_a_fault(mailtap):
    name = mailtap.next_rcpt("*@full.example", 452)
    assert name in [f["name"] for f in mailtap.faults()] and mailtap.armed == [name]
    with open("armed", "w") as f:
        f.write(name)

def test_the_next_test_starts_without_it(mailtap):
    with open("armed") as f:
        assert f.read() not in [f["name"] for f in mailtap.faults()]
    assert mailtap.armed == []

def test_reads_its_own_session(mailtap):
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as s:
        s.sendmail("inner@example.test", ["r@example.test"], "Subject: x\\r\\n\\r\\nx\\r\\n")
    assert mailtap.wait_for_session().senders == ["inner@example.test"]
'''


def test_the_plugin_starts_a_mailtap_and_resets_faults_between_tests(pytester):
    pytester.makepyfile(INNER_TESTS)
    result = run_inner(pytester)
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*3 passed*"])


def test_the_plugin_attaches_to_a_running_mailtap(pytester, mailtap):
    pytester.makepyfile(INNER_TESTS)
    mailtap.next_rcpt("left@over.example", 452, name="left-over")   # not the inner session's to remove
    result = run_inner(pytester, "--mailtap-url", mailtap.url, "--mailtap-smtp", "%s:%d" % mailtap.smtp)
    result.assert_outcomes(passed=3)
    assert [f["name"] for f in mailtap.faults()] == ["left-over"]
    inner = mailtap.wait_for_session(lambda s: s.senders == ["inner@example.test"])
    assert inner.recipients == ["r@example.test"]


def test_attached_without_its_smtp_address_the_error_names_the_option(pytester, mailtap):
    pytester.makepyfile('''
import pytest

def test_sends(mailtap):
    with pytest.raises(AttributeError, match="--mailtap-smtp HOST:PORT"):
        mailtap.smtp
''')
    run_inner(pytester, "--mailtap-url", mailtap.url).assert_outcomes(passed=1)
    with pytest.raises(AttributeError, match="smtp="):
        Mailtap(mailtap.url, token="").smtp


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def readme_text(readme):
    with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
        return f.read()


def python_blocks(readme):
    """The ```python blocks of a Markdown file of the repository."""
    return [b.split("```", 1)[0] for b in readme_text(readme).split("```python\n")[1:]]


def shell_commands(readme):
    """The commands of a Markdown file's indented blocks, continuation lines joined."""
    lines = [line[4:] for line in readme_text(readme).splitlines() if line.startswith("    ")]
    return [c.strip() for c in re.sub(r"\\\n\s*", "", "\n".join(lines)).splitlines()]


@pytest.mark.parametrize("readme", ["clients/python/README.md", "README.md"])
def test_the_readme_example_passes(pytester, readme):
    blocks = [b for b in python_blocks(readme) if "def test_" in b and "mailtap" in b]
    assert len(blocks) == 1, blocks
    assert len(blocks[0].strip().splitlines()) <= 10
    pytester.makepyfile(blocks[0])
    run_inner(pytester).assert_outcomes(passed=1)


def test_the_readmes_test_command_runs_from_the_clone():
    """clients/python/README.md "Tests": its command, from the clone's root, runs the plugin's
    own tests too (pytester runs them in another directory, where a relative PYTHONPATH finds
    nothing), and takes the relay where ./scripts/run builds it."""
    [command] = [c for c in shell_commands("clients/python/README.md") if "-m pytest" in c]
    relay = "MAILTAP_BIN=$PWD/build-release/relay/mailtap "
    assert command.startswith(relay)
    command = command.replace(relay, "MAILTAP_BIN=%s " % shlex.quote(find_binary()))
    only = " -p no:cacheprovider -k test_the_plugin_starts_a_mailtap_and_resets_faults_between_tests"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(["bash", "-c", command + only], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
    assert r.returncode == 0 and b"1 passed" in r.stdout, r.stdout.decode(errors="replace")


def test_the_readmes_venv_is_made_by_debians_python():
    """Another python3 first on the PATH (pyenv's) has no python3-venv's ensurepip."""
    venvs = [c for c in shell_commands("clients/python/README.md") if "-m venv" in c]
    assert venvs and all(c.startswith("/usr/bin/python3 -m venv ") for c in venvs), venvs


def test_pip_installs_the_package_and_pytest_finds_the_plugin(tmp_path):
    """`pip install ./clients/python` into a venv over Debian's packages, offline (the build
    backend is Debian's setuptools): the module imports, and pytest loads the plugin by its
    entry point, without -p."""
    # A copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    here = str(tmp_path / "python")
    shutil.copytree(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), here,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    r = subprocess.run([python, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-cache-dir",
                        "--disable-pip-version-check", here], env=env, cwd=str(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert r.returncode == 0, r.stdout.decode()
    r = subprocess.run([python, "-m", "pytest", "--help"], env=env, cwd=str(tmp_path),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert r.returncode == 0, r.stdout.decode()
    assert b"--mailtap-url" in r.stdout
    r = subprocess.run([python, "-c", "import mailtap_client, sys; print(mailtap_client.__file__)"], env=env,
                       cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    assert r.stdout.decode().startswith(str(venv)), r.stdout


def test_live_events_follow_a_session_and_its_fault(mailtap):
    mailtap.next_rcpt("*@full.example", 452, name="full")
    with mailtap.events() as events:
        refused = send(mailtap, "a@example.test", ["b@example.test", "c@full.example"])
        assert list(refused) == ["c@full.example"] and refused["c@full.example"][0] == 452
        started = events.wait_for(lambda e: e["type"] == "session_started")
        fault = events.wait_for(lambda e: e["type"] == "fault")
        ended = events.wait_for(lambda e: e["type"] == "session_ended")
    assert fault["session"] == started["session"] == ended["session"]
    assert (fault["rule"], fault["fault_type"], fault["stage"]) == ("full", "reply", "rcpt")
    assert ended["reason"] == "client_quit"


def test_live_events_want_the_token_of_a_protected_relay(tmp_path):
    token = "e0e1e2e3e4e5e6e7e8e9eaebecedeeef"
    with MailtapProcess(token=token, workdir=str(tmp_path)) as relay:
        with pytest.raises(MailtapError) as refused:
            Mailtap(relay.admin_url, token="").events()
        assert refused.value.status == 401
        with relay.client.events() as events:
            with smtplib.SMTP(*relay.smtp, timeout=30) as smtp:
                smtp.noop()
            assert events.wait_for(lambda e: e["type"] == "session_ended")["reason"] == "client_quit"
        with pytest.raises(TimeoutError):
            with relay.client.events() as quiet:
                quiet.next(timeout=0.3)
