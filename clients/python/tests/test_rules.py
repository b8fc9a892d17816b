"""Which rules the `mailtap` fixture removes around a test, and the names the client makes:
on an attached relay only the rules the test session armed (the relay's config and scenario
rules stay, and so do other test runs' on the same relay), on the plugin's own relay every
rule armed over the API; automatic names that two processes never share, lists of phases
included; and rules that apply to the sessions opened after them."""

import smtplib
import subprocess
import sys

from inner import FIND_RELAY, run_inner, start_inner
from mailtap_client import MailtapProcess

RELAY_RULE = '[[fault]]\nname = "relay-own"\ntype = "reply"\nphase = "rcpt"\nrecipient = "*@config.example"\ncode = 550\n'

SEES_THE_RELAYS_RULE = '''
import smtplib

def test_arms_a_rule_beside_the_relays_own(mailtap):
    mine = mailtap.next_rcpt("x@y.example", 452)
    assert sorted(f["name"] for f in mailtap.faults()) == sorted(["relay-own", mine])
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as s:
        refused = s.sendmail("a@example.test", ["ok@example.test", "b@config.example", "x@y.example"],
                             "Subject: x\\r\\n\\r\\nx\\r\\n")
    assert {r: code for r, (code, _) in refused.items()} == {"b@config.example": 550, "x@y.example": 452}

def test_the_next_test_has_the_relays_rule_and_not_the_last_tests(mailtap):
    assert [(f["name"], f["source"]) for f in mailtap.faults()] == [("relay-own", "config")]
'''


def test_attached_tests_leave_the_relays_own_rules_in_force(pytester, tmp_path):
    scenario = tmp_path / "relay.toml"
    scenario.write_text(RELAY_RULE)
    with MailtapProcess(args=["--scenario", str(scenario)]) as relay:
        pytester.makepyfile(SEES_THE_RELAYS_RULE)
        result = run_inner(pytester, "--mailtap-url", relay.admin_url, "--mailtap-smtp", "%s:%d" % relay.smtp)
        result.assert_outcomes(passed=2)
        assert [(f["name"], f["source"]) for f in relay.client.faults()] == [("relay-own", "config")]


OWN_RELAY_TESTS = '''
from mailtap_client import Mailtap

def test_arms_rules_through_the_fixture_and_another_client(mailtap):
    mailtap.next_rcpt("x@y.example", 452)
    Mailtap(mailtap.url, token=mailtap.token).next_rcpt("z@y.example", 452, name="the-apps-own")
    assert len(mailtap.faults()) == 3

def test_the_next_test_has_the_scenarios_rule_only(mailtap):
    assert [(f["name"], f["source"]) for f in mailtap.faults()] == [("relay-own", "config")]
'''


def test_the_plugins_own_relay_loses_every_api_rule_and_keeps_its_scenario(pytester, tmp_path):
    scenario = tmp_path / "relay.toml"
    scenario.write_text(RELAY_RULE)
    pytester.makepyfile(OWN_RELAY_TESTS)
    run_inner(pytester, "--mailtap-arg=--scenario=%s" % scenario).assert_outcomes(passed=2)


# Each run arms a rule with an automatic name for a recipient of its own, waits until every
# run has armed its rule, then checks that its rule is still there and works.
SHARING_TESTS = FIND_RELAY + '''
import smtplib, time

RUNS = 3

def test_each_run_keeps_its_own_rule(mailtap):
    job = os.environ["INNER_JOB"]
    recipient = "full-%s@y.example" % job
    name = mailtap.next_rcpt(recipient, 452, count=None)
    note("armed-" + job, name)
    deadline = time.monotonic() + 30
    while len([f for f in os.listdir(".") if f.startswith("armed-") and not f.endswith(".tmp")]) < RUNS:
        assert time.monotonic() < deadline, "the other runs never armed their rules"
        time.sleep(0.05)
    assert name in [f["name"] for f in mailtap.faults()]
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as s:
        refused = s.sendmail("a@example.test", ["ok@example.test", recipient], "Subject: x\\r\\n\\r\\nx\\r\\n")
    assert list(refused) == [recipient]
'''


def test_concurrent_runs_on_one_relay_keep_their_rules(pytester, mailtap):
    """Three pytest runs attached to one relay at once (CI jobs sharing it; pytest-xdist
    workers are the same to the relay): automatic names do not collide, and no run's
    cleaning removes another's rule."""
    pytester.makepyfile(SHARING_TESTS)
    attach = ("-q", "--mailtap-url", mailtap.url, "--mailtap-smtp", "%s:%d" % mailtap.smtp)
    runs = [start_inner(pytester, *attach, env={"INNER_JOB": "job%d" % i}) for i in range(3)]
    outputs = [run.communicate(timeout=120)[0].decode(errors="replace") for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], "\n".join(outputs)
    assert mailtap.faults() == []


def test_automatic_names_differ_between_processes(mailtap):
    code = ("import sys; from mailtap_client import Mailtap; "
            "print(Mailtap(sys.argv[1], token='').reply('mail', 452, count=None, sender='*@other.example'))")
    names = [_run_python(code, mailtap.url) for _ in range(2)] + [mailtap.reply("mail", 452, sender="*@mine.example")]
    assert len(set(names)) == 3
    assert set(names) == {f["name"] for f in mailtap.faults()}


def test_a_rule_for_a_list_of_phases_gets_a_name_the_api_takes(mailtap):
    name = mailtap.reply(["rcpt", "mail"], 452, sender="*@list.example")
    assert [f["phases"] for f in mailtap.faults() if f["name"] == name] == [["rcpt", "mail"]]
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as s:
        s.ehlo("app.test")
        assert s.mail("a@list.example")[0] == 452


def _run_python(code, *args):
    r = subprocess.run([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    return r.stdout.decode().strip()


def test_a_rule_applies_to_sessions_opened_after_it_and_stays_with_them(mailtap):
    """What the READMEs say: a session keeps the rules it opened with; arming after a
    connection opened does not reach it, and removing a rule does not take it from one."""
    message = "Subject: x\r\n\r\nx\r\n"
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as before:
        mailtap.next_rcpt("x@y.example", 452, count=None)
        with smtplib.SMTP(*mailtap.smtp, timeout=30) as after:
            mailtap.reset_faults()
            assert before.sendmail("a@example.test", ["ok@example.test", "x@y.example"], message) == {}
            refused = after.sendmail("a@example.test", ["ok@example.test", "x@y.example"], message)
    assert list(refused) == ["x@y.example"] and refused["x@y.example"][0] == 452
    with smtplib.SMTP(*mailtap.smtp, timeout=30) as later:
        assert later.sendmail("a@example.test", ["x@y.example"], message) == {}
