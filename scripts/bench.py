"""Interleaved throughput benchmark: direct vs haproxy (tcp mode) vs mailtap (captures on)
vs mailtap-nocap (mailtap run --no-captures: the same relay recording nothing, to show what
recording costs), then the relay's memory while ten large messages are in flight (W5's RSS
target), memory per idle session (W6) and the accuracy of injected delays (workload "delay").

For each pass and workload, smtp-source runs against smtp-sink directly, then through each
relay; medians over passes; ratio = relay msg/s / direct msg/s of the same pass. Relay CPU
per message comes from /proc/PID/stat (utime+stime) around each run. Loopback only, every
run bounded by a timeout.
"""
import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")

# id, label, smtp-source args, messages (full), messages (smoke)
WORKLOADS = [
    ("W1", "1 KiB, -d -s 1", ["-d", "-s", "1", "-l", "1024"], 5000, 300),
    ("W2c10", "1 KiB, -d -s 10", ["-d", "-s", "10", "-l", "1024"], 20000, 500),
    ("W2c100", "1 KiB, -d -s 100", ["-d", "-s", "100", "-l", "1024"], 20000, 500),
    ("W3c10", "1 KiB, one msg/conn, -s 10", ["-s", "10", "-l", "1024"], 5000, 300),
    ("W4c1", "100 KiB, -d -s 1", ["-d", "-s", "1", "-l", "102400"], 1500, 100),
    ("W4c10", "100 KiB, -d -s 10", ["-d", "-s", "10", "-l", "102400"], 3000, 100),
    ("W5", "5 MiB, -d -s 10", ["-d", "-s", "10", "-l", str(5 * 1024 * 1024)], 100, 10),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Peer:
    def __init__(self, name, argv, port, pid_source=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_port(port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# W6: idle sessions held open after EHLO, and the relay's RSS growth per session.
IDLE_SESSIONS = (1000, 10000)
IDLE_SESSIONS_SMOKE = (100,)
# Enough descriptors for 10,000 sessions: the bench holds one per session, a relay two.
FILE_LIMIT = 65536
# Descriptors a relay needs besides its sessions' (listeners, epoll, timers, logs, captures).
RELAY_SPARE_FDS = 256


def raise_file_limit():
    """Raises this process's (so the peers') descriptor limit; returns the limit in force.
    Raising the hard limit needs CAP_SYS_RESOURCE: without it, the hard limit is the cap."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, FILE_LIMIT)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def relay_session_cap(file_limit):
    """Concurrent sessions a relay can hold within the descriptor limit (two each)."""
    return (file_limit - RELAY_SPARE_FDS) // 2


def read_reply(sock):
    """Reads one SMTP reply (possibly multi-line); returns its last line."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the reply ended")
        data += chunk
        lines = data.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return line


def idle_session_memory(peer, sessions, timeout=300):
    """RSS growth of `peer` per session while `sessions` sit idle after EHLO; (kB per session,
    sessions actually held)."""
    held = []
    before = rss_kib(peer.proc.pid)
    end = time.time() + timeout
    try:
        for _ in range(sessions):
            if time.time() > end:
                break
            try:
                s = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
                held.append(s)
                read_reply(s)                      # the banner (the upstream's, through the relay)
                s.sendall(b"EHLO bench.example\r\n")
                if not read_reply(s).startswith(b"250"):
                    raise RuntimeError("EHLO refused")
            except (OSError, RuntimeError) as e:
                print(f"W6 {peer.name}: session {len(held)} failed: {e}", file=sys.stderr)
                if held:
                    held.pop().close()
                break
        time.sleep(0.5)
        after = rss_kib(peer.proc.pid)
    finally:
        for s in held:
            s.close()
    count = len(held)
    return ((after - before) * 1.024 / count if count else 0.0), count


def file_write_rates(directory, size, chunk=64 * 1024):
    """MB/s of writing `size` bytes of new file data into the page cache, then of writing them
    again over the same (cached) pages. Captures are new file data: on a VM that hands freed
    memory back to its host (virtio-balloon free page reporting), every new page costs a fault
    in the host, and the first rate is several times below the second (README Performance).
    The full run writes a GiB, because the first few hundred MB can land on pages freed but
    not yet handed back.
    The file is deleted before its dirty pages are written back, so it costs no disk I/O."""
    block = b"x" * chunk
    path = os.path.join(directory, "write-rate.probe")
    rates = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(2):
            os.lseek(fd, 0, os.SEEK_SET)
            start = time.perf_counter()
            for _ in range(size // chunk):
                os.write(fd, block)
            rates.append(size / (time.perf_counter() - start) / 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"new_data_mb_per_s": round(rates[0]), "cached_rewrite_mb_per_s": round(rates[1])}


def run_source(port, args, messages, timeout):
    argv = ["smtp-source", *args, "-m", str(messages), f"127.0.0.1:{port}"]
    start = time.perf_counter()
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({r.returncode}): {r.stderr.strip()[:300]}")
    return messages / elapsed


def rss_growth_in_flight(peer, started_kib, size, sessions=10, timeout=600):
    """KiB the relay's RSS was above `started_kib` (its RSS when it had started) at its peak
    while `sessions` messages of `size` bytes passed through it at once (W5's memory target:
    ten 50 MiB messages, growth under 16 MiB)."""
    peak = [rss_kib(peer.proc.pid)]
    done = threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_kib(peer.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run_source(peer.port, ["-d", "-s", str(sessions), "-l", str(size)], sessions, timeout)
    finally:
        done.set()
        sampler.join()
    return peak[0] - started_kib


DELAY_SCENARIO = """
# bench: fixed delays on the RCPT reply and the end-of-data reply
[[fault]]
name = "bench-rcpt-delay"
type = "delay"
phase = "rcpt"
delay = "20ms"

[[fault]]
name = "bench-data-end-delay"
type = "delay"
phase = "data_end"
delay = "100ms"
"""


def delay_accuracy(opts, sink_port, work, messages, sessions):
    """Planned vs actual delay from the capture's fault records, under smtp-source load."""
    scenario = os.path.join(work, "delay.toml")
    with open(scenario, "w") as f:
        f.write(DELAY_SCENARIO)
    captures = os.path.join(work, f"delay-captures-{sessions}")   # one run each: its own records only
    port = free_port()
    peer = Peer("mailtap-delay", [opts.mailtap, "run", "--listen", f"127.0.0.1:{port}", "--upstream",
                                  f"127.0.0.1:{sink_port}", "--captures", captures, "--log-level", "warn",
                                  "--scenario", scenario, "--seed", "1"], port)
    try:
        run_source(port, ["-d", "-s", str(sessions), "-l", "1024"], messages, 600)
    finally:
        peer.stop()
    late = {}
    for root, _, files in os.walk(captures):
        for name in files:
            if not name.endswith(".jsonl"):   # the capture index (index.sqlite3) lives beside them
                continue
            with open(os.path.join(root, name)) as f:
                for line in f:
                    if '"fault"' not in line:
                        continue
                    rec = json.loads(line)
                    if rec.get("type") == "fault" and rec.get("decision") == "delay":
                        late.setdefault(rec["rule"], []).append(rec["actual_delay_us"] - rec["planned_delay_us"])
    rows = []
    for rule, values in sorted(late.items()):
        values.sort()
        rows.append({"rule": rule, "samples": len(values), "late_us_median": statistics.median(values),
                     "late_us_p99": values[min(len(values) - 1, int(len(values) * 0.99))],
                     "late_us_min": values[0], "late_us_max": values[-1]})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailtap", required=True)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="one short pass, to keep the bench working")
    ap.add_argument("--json", default="bench-results.json")
    ap.add_argument("--only", default="", help="comma-separated workload ids (W1,W2c10,W2c100,W3c10,W4c1,W4c10,W5,W6,delay)")
    opts = ap.parse_args()
    passes = 1 if opts.smoke else opts.passes
    only = set(filter(None, opts.only.split(",")))
    workloads = [w for w in WORKLOADS if not only or w[0] in only]
    measure_delay = not only or "delay" in only
    measure_idle = not only or "W6" in only
    measure_in_flight = not only or "W5" in only
    have_haproxy = shutil.which("haproxy") is not None
    file_limit = raise_file_limit()
    session_cap = relay_session_cap(file_limit)

    work = tempfile.mkdtemp(prefix="mailtap-bench-")
    writes = file_write_rates(work, size=(64 if opts.smoke else 1024) * 1024 * 1024)
    print(f"file writes here: new data {writes['new_data_mb_per_s']} MB/s, the same pages again "
          f"{writes['cached_rewrite_mb_per_s']} MB/s (what a capture's bytes cost: README Performance)",
          file=sys.stderr, flush=True)
    sink_port = free_port()
    # -m: concurrent sessions the sink serves; W6 holds 10,000 at once.
    sink = Peer("smtp-sink", ["smtp-sink", "-u", "nobody", "-m", "11000", f"127.0.0.1:{sink_port}", "4096"], sink_port)
    peers = {}
    try:
        if have_haproxy:
            hp_port = free_port()
            cfg = os.path.join(work, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(f"""global
  maxconn {session_cap}
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen smtp
  bind 127.0.0.1:{hp_port}
  server sink 127.0.0.1:{sink_port}
""")
            peers["haproxy"] = Peer("haproxy", ["haproxy", "-f", cfg, "-db"], hp_port)
        for name, recording in (("mailtap", ["--captures", os.path.join(work, "captures")]),
                                ("mailtap-nocap", ["--no-captures"])):
            mt_port = free_port()
            peers[name] = Peer(name, [opts.mailtap, "run", "--listen", f"127.0.0.1:{mt_port}", "--upstream",
                                      f"127.0.0.1:{sink_port}", *recording, "--log-level", "warn", "--admin", "off",
                                      "--max-sessions", str(session_cap)], mt_port)
        results = {w[0]: {"direct": [], **{p: [] for p in peers}, "cpu": {p: [] for p in peers}} for w in workloads}
        ratios = {w[0]: {p: [] for p in peers} for w in workloads}
        started_rss = {name: rss_kib(peer.proc.pid) for name, peer in peers.items()}
        rss_before = started_rss["mailtap"]
        rss_peak = rss_before
        for n in range(passes):
            for wid, label, args, full, smoke in workloads:
                messages = smoke if opts.smoke else full
                direct = run_source(sink_port, args, messages, 600)
                results[wid]["direct"].append(direct)
                for name, peer in peers.items():
                    cpu0 = cpu_seconds(peer.proc.pid)
                    rate = run_source(peer.port, args, messages, 600)
                    cpu = cpu_seconds(peer.proc.pid) - cpu0
                    results[wid][name].append(rate)
                    results[wid]["cpu"][name].append(cpu * 1e6 / messages)
                    ratios[wid][name].append(rate / direct)
                    if name == "mailtap":
                        rss_peak = max(rss_peak, rss_kib(peer.proc.pid))
                        # Its captures (hundreds of MB in W4 and W5) reach the disk now, not
                        # during the next peer's run.
                        os.sync()
                print(f"pass {n + 1}/{passes} {wid}: direct {direct:.0f} msg/s, " +
                      ", ".join(f"{p} {results[wid][p][-1]:.0f} ({ratios[wid][p][-1]:.2f})" for p in peers),
                      file=sys.stderr, flush=True)
        table = []
        for wid, label, *_ in workloads:
            row = {"id": wid, "workload": label, "direct_msgs_per_s": statistics.median(results[wid]["direct"])}
            for p in peers:
                row[f"{p}_ratio"] = statistics.median(ratios[wid][p])
                row[f"{p}_cpu_us_per_msg"] = statistics.median(results[wid]["cpu"][p])
            table.append(row)
        names = list(peers)
        print(f"\n{'workload':<32}{'direct msg/s':>14}" + "".join(f"{p + ' ratio':>20}{p + ' cpu us/msg':>26}" for p in names))
        for row in table:
            print(f"{row['id'] + ' ' + row['workload']:<32}{row['direct_msgs_per_s']:>14.0f}" +
                  "".join(f"{row[p + '_ratio']:>20.2f}{row[p + '_cpu_us_per_msg']:>26.1f}" for p in names))
        print(f"\nmailtap RSS: {rss_before} KiB at start, {rss_peak} KiB peak; passes: {passes}; file writes: "
              f"new data {writes['new_data_mb_per_s']} MB/s, cached {writes['cached_rewrite_mb_per_s']} MB/s")
        in_flight = []
        if measure_in_flight:
            # W5's memory: ten large messages in flight at once, each peer in turn; the growth is
            # counted from the peer's RSS when it had started, before any workload.
            size = (1 if opts.smoke else 50) * 1024 * 1024
            for name, peer in peers.items():
                in_flight.append({"peer": name, "messages": 10, "message_bytes": size,
                                  "rss_growth_kib": rss_growth_in_flight(peer, started_rss[name], size)})
                if name == "mailtap":
                    os.sync()
            print(f"\nW5 memory, 10 messages of {size >> 20} MiB in flight: " +
                  ", ".join(f"{row['peer']} +{row['rss_growth_kib'] / 1024:.1f} MiB" for row in in_flight))
        idle = []
        if measure_idle:
            # W6 after the throughput passes; each peer in turn, on the same sink.
            if session_cap < max(IDLE_SESSIONS):
                print(f"W6: the descriptor limit ({file_limit}; raising it needs CAP_SYS_RESOURCE) lets a relay "
                      f"hold {session_cap} sessions, not {max(IDLE_SESSIONS)}", file=sys.stderr)
            for wanted in (IDLE_SESSIONS_SMOKE if opts.smoke else IDLE_SESSIONS):
                sessions = min(wanted, session_cap)
                for name, peer in peers.items():
                    kb, held = idle_session_memory(peer, sessions)
                    idle.append({"peer": name, "sessions": wanted, "held": held, "kb_per_session": kb,
                                 "file_limit": file_limit})
            print(f"\n{'W6 idle sessions after EHLO':<32}{'sessions':>9}{'held':>8}{'RSS kB/session':>16}")
            for row in idle:
                print(f"{row['peer']:<32}{row['sessions']:>9}{row['held']:>8}{row['kb_per_session']:>16.1f}")
        delays = []
        if measure_delay:
            # Delay accuracy: how late each injected delay ends (actual - planned), under load.
            for sessions in (1, 10):
                for row in delay_accuracy(opts, sink_port, work, 30 if opts.smoke else 300, sessions):
                    row["sessions"] = sessions
                    delays.append(row)
            print(f"\n{'delay rule':<24}{'sessions':>9}{'samples':>9}{'late median us':>16}{'p99 us':>10}{'max us':>10}")
            for row in delays:
                print(f"{row['rule']:<24}{row['sessions']:>9}{row['samples']:>9}{row['late_us_median']:>16.0f}"
                      f"{row['late_us_p99']:>10}{row['late_us_max']:>10}")
        with open(opts.json, "w") as f:
            json.dump({"passes": passes, "smoke": opts.smoke, "file_writes": writes, "rows": table,
                       "w5_in_flight": in_flight,
                       "mailtap_rss_kib": {"start": rss_before, "peak": rss_peak}, "idle_sessions": idle,
                       "delay_accuracy": delays},
                      f, indent=2)
        print(f"wrote {opts.json}")
    finally:
        for p in peers.values():
            p.stop()
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
