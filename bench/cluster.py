# SPDX-License-Identifier: AGPL-3.0-only
"""Does coordination cost grow with nodes? The same loads through HAProxy
to one pop3d node and to three (PostgreSQL store, Redis shared limits,
send-proxy-v2), alternating, with the CPU time of pop3d, PostgreSQL and
Redis read from /proc around each load; CPU per session and the sessions
per core it projects. Loopback only; needs root (PostgreSQL runs as the
postgres user). See BENCHMARKS.md."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the shared helpers)

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
REDIS_PORT = 46379
HAPROXY = {1: 46110, 3: 46111}


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            pass
    return total


def pids_of(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], text=True, capture_output=True).stdout
    return [int(p) for p in out.split()]


def node_config(work, n, url):
    port, direct, metrics = 47110 + n, 47210 + n, 47310 + n
    path = os.path.join(work, f"node{n}.toml")
    with open(path, "w") as f:
        f.write(f"""preset = "production"
[server]
hostname = "bench"
node_name = "node{n}"
[[listener]]
bind = "127.0.0.1:{direct}"
[[listener]]
bind = "127.0.0.1:{port}"
proxy_protocol = true
proxy_trusted_networks = ["127.0.0.1/32"]
[storage]
backend = "postgres"
url = "{url}"
[auth]
passwd_file = "passwd"
[security]
trusted_networks = ["127.0.0.0/8"]
max_connections_per_ip = 100000
enable_security_logging = false
shared_state = "redis://127.0.0.1:{REDIS_PORT}"
[performance]
max_concurrent_sessions = 100000
connection_pool_size = 32
[metrics]
bind = "127.0.0.1:{metrics}"
""")
    return path, port, metrics


def haproxy_config(work, nodes):
    path = os.path.join(work, f"haproxy{len(nodes)}.cfg")
    servers = "".join(f"  server node{n} 127.0.0.1:{port} send-proxy-v2 check port {metrics} inter 1s\n"
                      for n, (_, port, metrics) in enumerate(nodes))
    with open(path, "w") as f:
        f.write(f"global\n  maxconn 2000\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                f"  timeout client 60s\n  timeout server 60s\n"
                f"frontend pop3\n  bind 127.0.0.1:{HAPROXY[len(nodes)]}\n  default_backend nodes\n"
                f"backend nodes\n  balance roundrobin\n  option httpchk GET /readyz\n{servers}")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (PostgreSQL is started as the postgres user)")
    work = tempfile.mkdtemp(prefix="pop3-cluster-bench-")
    os.chmod(work, 0o755)
    procs = []
    database = None
    try:
        print(f"work dir {work}; building users and Maildirs ...", flush=True)
        compare.setup(work, quick=True)
        database = compare.start_database(work)
        url = database[2]
        old = compare.pop3d_config(work)
        nodes = [node_config(work, n, url) for n in range(3)]
        compare.sh(compare.POP3D, "db", "migrate", "--config", nodes[0][0])
        for user in [f"u{u}" for u in range(64)]:
            compare.sh(compare.POP3D, "--log", "warn", "migrate-maildir", "--from", old,
                       "--config", nodes[0][0], "--user", user)
        procs.append(subprocess.Popen(["redis-server", "--save", "", "--appendonly", "no", "--bind",
                                       "127.0.0.1", "--port", str(REDIS_PORT)], stdout=subprocess.DEVNULL))
        compare.wait_port(REDIS_PORT)
        for path, port, metrics in nodes:
            procs.append(subprocess.Popen([compare.POP3D, "--log", "warn", "serve", "--config", path],
                                          cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            compare.wait_port(port)
        for count in (1, 3):
            haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
            procs.append(subprocess.Popen([haproxy, "-db", "-f", haproxy_config(work, nodes[:count])],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            compare.wait_port(HAPROXY[count])
        time.sleep(2)
        pop3d = pids_of("pop3d --log warn serve")
        redis = pids_of(f"redis-server.*{REDIS_PORT}")
        loads = {
            "logins/s (PLAIN)": ("login", 8),
            "small RETR sessions/s (20 x 4 KiB)": ("retr", 8),
        }
        results = {}
        for rep in range(args.reps):
            for load, (mode, conns) in loads.items():
                for count in (1, 3):
                    postgres = pids_of("postgres")
                    watched = pop3d + postgres + redis
                    before = cpu_ticks(watched)
                    r = compare.bench(HAPROXY[count], mode, conns, args.duration, users=64)
                    spent_ms = (cpu_ticks(watched) - before) * TICK_MS
                    per = spent_ms / r["sessions"] if r["sessions"] else float("nan")
                    results.setdefault((load, count), []).append((r["rate"], per, r["errors"]))
                    print(f"rep {rep + 1} {load:36} {count} node(s) {r['rate']:9.1f}/s "
                          f"{per:6.3f} CPU ms/session errors {r['errors']}", flush=True)
        print()
        print(f"{'load':36} {'nodes':>5} {'sessions/s':>11} {'CPU ms/session':>15} {'3 vs 1':>7} "
              f"{'sessions/s per core':>20}")
        for load in loads:
            one = compare.med([p for _, p, _ in results[(load, 1)]])
            for count in (1, 3):
                rows = results[(load, count)]
                rate = compare.med([r for r, _, _ in rows])
                per = compare.med([p for _, p, _ in rows])
                print(f"{load:36} {count:5} {rate:11.1f} {per:15.3f} {per / one:6.2f}x {1000 / per:20.0f}")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM) if p.args[0] == compare.POP3D else p.terminate()
                p.wait(10)
            except Exception:
                p.kill()
        if database:
            compare.stop_database(database[0], database[1])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
