"""The plugin in a pytest of its own, for the tests of the plugin: the command line, a run that
can be signalled (a plain subprocess), and code for the inner tests that finds the relay the
inner pytest started (its child process named mailtap) through /proc."""

import os
import signal
import subprocess
import sys
import time

PLUGIN_ARGS = ("-p", "mailtap_client.pytest_plugin", "-p", "no:cacheprovider")


def run_inner(pytester, *args, timeout=180):
    """pytester's subprocess run of the inner tests with the plugin loaded."""
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *args, timeout=timeout)


def start_inner(pytester, *args, env=None):
    """The inner pytest as a plain subprocess (so that it can be signalled), in pytester's
    directory, with this process's environment (PYTHONPATH, MAILTAP_BIN) and `env` on top."""
    environment = dict(os.environ, **(env or {}))
    return subprocess.Popen([sys.executable, "-m", "pytest", *PLUGIN_ARGS, *args], cwd=str(pytester.path),
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for_file(path, timeout=30.0, proc=None):
    """The text of `path` once it exists (written whole: its writer renames it into place)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the inner pytest ended first: %s" % proc.stdout.read().decode(errors="replace"))
        assert time.monotonic() < deadline, "no %s in %.0f s" % (path, timeout)
        time.sleep(0.05)
    with open(path, encoding="utf-8") as f:
        return f.read()


def gone_within(pid, timeout):
    """Whether process `pid` has ended (or become a zombie) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while is_mailtap(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def is_mailtap(pid):
    """Whether `pid` is a running (not zombie) process named mailtap."""
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as f:
            stat = f.read()
    except OSError:
        return False
    name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()[0]
    return name == "mailtap" and state != "Z"


def end_leftover_relay(pid):
    """After a failed check: the relay `pid` that outlived its pytest, ended so that it does
    not outlive this test too."""
    if is_mailtap(pid):
        os.kill(pid, signal.SIGKILL)


# For the inner tests: relay_pid() and relay_workdir() of the relay their pytest started, and
# note(name, text), which writes a file into the inner tests' directory for the outer test.
FIND_RELAY = '''
import os

def relay_pid():
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        name, ppid = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()[1]
        if name == "mailtap" and ppid == me:
            return int(entry)
    raise AssertionError("no mailtap child of this pytest")

def relay_workdir():
    with open("/proc/%d/cmdline" % relay_pid(), "rb") as f:
        argv = f.read().decode().split("\\0")
    return os.path.dirname(argv[argv.index("--captures") + 1])

def note(name, text):
    with open(name + ".tmp", "w") as f:
        f.write(str(text))
    os.rename(name + ".tmp", name)
'''
