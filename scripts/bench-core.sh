#!/usr/bin/env bash
# Core benchmark (not a timed test): `edgebox up` cold start to ready, idle
# RSS, and the size of each dist binary present.
#   scripts/bench-core.sh [BINARY] [RUNS]
set -euo pipefail
bin=$(realpath "${1:-target/release/edgebox}")
runs=${2:-20}
exec python3 - "$bin" "$runs" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request, glob

binary, runs = sys.argv[1], int(sys.argv[2])

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.2) as r:
            return r.status == 200
    except Exception:
        return False

def start_once(data_dir):
    port = free_port()
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "--data-dir", data_dir, "--admin-listen", f"127.0.0.1:{port}",
                          "--log-format", "json", "up"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not ready(port):
        if p.poll() is not None:
            sys.exit(f"edgebox exited early: {p.stderr.read()}")
        time.sleep(0.0005)
    wall = (time.perf_counter() - t0) * 1000
    return p, port, wall

def stop(p):
    p.send_signal(signal.SIGTERM); p.wait(10)
    for line in p.stderr.read().splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if v.get("fields", {}).get("message") == "ready":
            return float(v["fields"]["startup_ms"])
    return float("nan")

results = {}
for label, fresh in (("cold (new store)", True), ("warm (existing store)", False)):
    walls, inner = [], []
    keep = tempfile.mkdtemp()
    for _ in range(runs):
        d = tempfile.mkdtemp() if fresh else keep
        p, port, wall = start_once(d)
        walls.append(wall); inner.append(stop(p))
    results[label] = (statistics.median(walls), statistics.median(inner))

p, port, _ = start_once(tempfile.mkdtemp())
time.sleep(2)
rss_kb = int([l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS:")][0].split()[1])
stop(p)

print(f"edgebox core benchmark ({runs} runs each, medians; {os.cpu_count()} cores)")
for label, (wall, inner) in results.items():
    print(f"  start to ready, {label:22}: {wall:6.1f} ms exec→/readyz 200, {inner:6.1f} ms in-process  (goal < 50 ms)")
print(f"  idle RSS after 2 s: {rss_kb/1024:.1f} MiB  (goal < 20 MB)")
sizes = sorted(glob.glob("dist/edgebox-*"))
for f in sizes:
    print(f"  size {os.path.basename(f):45}: {os.path.getsize(f)/1e6:5.2f} MB  (goal < 20 MB)")
if not sizes:
    print("  (no dist/ binaries: run `make dist` for sizes)")
PY
