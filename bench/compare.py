# SPDX-License-Identifier: AGPL-3.0-only
"""Run the same POP3 loads against pop3d, Dovecot and the ceiling responder,
alternating between them, and print medians, spreads and ratios. With
--postgres, pop3d on its PostgreSQL backend (a private server started here,
the same mail copied in with `pop3d migrate-maildir`) joins the rotation.

Everything listens on 127.0.0.1; every load is bounded in time. See
BENCHMARKS.md for the method."""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "target/release/pop3-bench")
POP3D = os.path.join(ROOT, "target/release/pop3d")

PORTS = {"pop3d": 41110, "pop3d-tls": 41995, "dovecot": 42110, "ceiling": 43110, "ceiling-big": 43111,
         "baseline": 44110, "baseline-tls": 44995, "postgres": 45110, "postgres-tls": 45995,
         "database": 45432, "pop3d-lmtp": 41024, "postgres-lmtp": 45024, "dovecot-lmtp": 42024}


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def wait_port(port, timeout=20):
    import socket
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def message(size, n):
    head = f"From: bench@example.org\r\nSubject: message {n}\r\n\r\n".encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = bytearray(head)
    while len(body) + len(line) <= size:
        body += line
    body += b"x" * (size - len(body) - 2) + b"\r\n" if size - len(body) >= 2 else b""
    return bytes(body)


def make_maildir(home, messages, sizes_in_names=False):
    md = os.path.join(home, "Maildir")
    for sub in ("new", "cur", "tmp"):
        os.makedirs(os.path.join(md, sub), exist_ok=True)
    for i, data in enumerate(messages):
        name = f"{1700000000 + i}.M{i}P1.bench"
        if sizes_in_names:
            # As Dovecot's LDA and `pop3d deliver` name files.
            crlf_size = len(data) + data.count(b"\n") - data.count(b"\r\n")
            name += f",S={len(data)},W={crlf_size}"
        with open(os.path.join(md, "cur", name + ":2,S"), "wb") as f:
            f.write(data)
    return md


def setup(work, quick):
    """Users, passwd file and Maildirs shared by pop3d and Dovecot (whose
    mail processes refuse to run as root: the files belong to "vmail")."""
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "vmail"],
                   capture_output=True)
    homes = os.path.join(work, "home")
    lines = []
    small = [message(4096, i) for i in range(20)]
    for u in range(64):
        make_maildir(os.path.join(homes, f"u{u}"), small)
        lines.append(f"u{u}:{{PLAIN}}pw::::{homes}/u{u}")
    big = bytearray()
    chunk = message(1 << 20, 0)
    for _ in range(50):
        big += chunk
    make_maildir(os.path.join(homes, "big"), [bytes(big)])
    lines.append(f"big:{{PLAIN}}pw::::{homes}/big")
    huge_n = 5000 if quick else 50000
    make_maildir(os.path.join(homes, "huge"), [message(2048, i) for i in range(huge_n)])
    lines.append(f"huge:{{PLAIN}}pw::::{homes}/huge")
    make_maildir(os.path.join(homes, "hugew"), [message(2048, i) for i in range(huge_n)], sizes_in_names=True)
    lines.append(f"hugew:{{PLAIN}}pw::::{homes}/hugew")
    # LMTP recipients, apart from the users the other loads read.
    for u in range(64):
        make_maildir(os.path.join(homes, f"l{u}"), [])
        lines.append(f"l{u}:{{PLAIN}}pw::::{homes}/l{u}")
    for u in range(10000):
        lines.append(f"i{u}:{{PLAIN}}pw::::{homes}/i{u}")
        make_maildir(os.path.join(homes, f"i{u}"), [])
    argon = sh(POP3D, "hash-password", input="pw\n").strip()
    for u in range(8):
        lines.append(f"a{u}:{argon}::::{homes}/a{u}")
    lines.append(f"probe:{{PLAIN}}pw::::{homes}/probe")
    with open(os.path.join(work, "passwd"), "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["chown", "-R", "vmail:vmail", homes], check=True)
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-days", "30", "-subj", "/CN=localhost", "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem")
    return huge_n


def pop3d_config(work, name="pop3d.toml", port=PORTS["pop3d"], tls_port=PORTS["pop3d-tls"],
                 maildir="%h/Maildir", lmtp_port=PORTS["pop3d-lmtp"]):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(f"""preset = "production"
[server]
hostname = "bench"
[[listener]]
bind = "127.0.0.1:{port}"
[[listener]]
bind = "127.0.0.1:{tls_port}"
tls = "implicit"
[tls]
cert = "cert.pem"
key = "key.pem"
[storage]
maildir = "{maildir}"
[auth]
passwd_file = "passwd"
[security]
# The load generator is one address making thousands of sessions.
trusted_networks = ["127.0.0.0/8"]
max_connections_per_ip = 100000
enable_security_logging = false
[performance]
max_concurrent_sessions = 100000
[[lmtp]]
bind = "127.0.0.1:{lmtp_port}"
""")
    return path


def start_database(work):
    """A private PostgreSQL in the work dir (initdb refuses root: the
    postgres user runs it), with pop3d's schema; returns its URL."""
    pg_bin = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
    bin_dir = f"/usr/lib/postgresql/{pg_bin}/bin"
    data = os.path.join(work, "pgdata")
    os.makedirs(data)
    subprocess.run(["chown", "postgres", data], check=True)
    as_pg = ["runuser", "-u", "postgres", "--"]
    sh(*as_pg, f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "pop3d", "--no-sync", "-E", "UTF8",
       "--locale", "C.UTF-8")
    # Durable as shipped except fsync (this machine's disk is not what is
    # measured); a connection limit above every pool here.
    sh(*as_pg, f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(data, "log"), "-w", "-o",
       f"-p {PORTS['database']} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off "
       f"-c max_connections=300 -c shared_buffers=512MB", "start")
    sh("psql", "-h", "127.0.0.1", "-p", str(PORTS["database"]), "-U", "pop3d", "-d", "postgres", "-c",
       "CREATE DATABASE mail")
    # pop3d reaches it over its Unix socket, as a node on the database's
    # own host would (TCP on loopback costs about a fifth of the 50 MiB
    # rate here; BENCHMARKS.md).
    return bin_dir, data, f"host={data} port={PORTS['database']} user=pop3d dbname=mail"


def stop_database(bin_dir, data):
    subprocess.run(["runuser", "-u", "postgres", "--", f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "stop"],
                   capture_output=True)


def postgres_config(work, url):
    path = pop3d_config(work, name="postgres.toml", port=PORTS["postgres"], tls_port=PORTS["postgres-tls"],
                        lmtp_port=PORTS["postgres-lmtp"])
    with open(path) as f:
        text = f.read()
    text = text.replace('[storage]\nmaildir = "%h/Maildir"\n',
                        f'[storage]\nbackend = "postgres"\nurl = "{url}"\n')
    with open(path, "w") as f:
        f.write(text)
    return path


def pg_connections():
    out = sh("psql", "-h", "127.0.0.1", "-p", str(PORTS["database"]), "-U", "pop3d", "-d", "postgres", "-Atc",
             "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pop3d'")
    return int(out.strip())


def dovecot_config(work):
    run = os.path.join(work, "dovecot")
    os.makedirs(run, exist_ok=True)
    path = os.path.join(work, "dovecot.conf")
    with open(path, "w") as f:
        f.write(f"""protocols = pop3 lmtp
listen = 127.0.0.1
base_dir = {run}/run
state_dir = {run}/state
log_path = {run}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
# Fair tuning: login processes reused ("high-performance mode"), an auth
# cache, and process limits high enough for every load here.
default_process_limit = 12000
default_client_limit = 15000
auth_cache_size = 10M
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {work}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {work}/passwd
  default_fields = uid=vmail gid=vmail
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {PORTS['dovecot']}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  service_count = 0
  process_min_avail = 2
  client_limit = 15000
}}
service pop3 {{
  process_limit = 12000
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {PORTS['dovecot-lmtp']}
  }}
  process_min_avail = 2
}}
service auth {{
  client_limit = 15000
}}
""")
    return path


class Server:
    def __init__(self, name, cmd, port, cwd=None):
        self.name, self.cmd, self.port, self.cwd = name, cmd, port, cwd
        self.proc = None

    def start(self):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        try:
            wait_port(self.port)
        except SystemExit:
            self.log.seek(0)
            sys.stderr.write(self.log.read().decode(errors="replace")[-2000:])
            raise
        return self

    def stop(self):
        if self.proc:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc = None


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                m = re.search(r"^Pss:\s+(\d+) kB", f.read(), re.M)
                total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def dovecot_pids():
    out = subprocess.run(["pgrep", "-f", "dovecot"], text=True, capture_output=True).stdout
    return [int(p) for p in out.split()]


def bench(port, mode, conns, duration, user="u{}", users=0, tls=False):
    cmd = [BENCH, "run", "--mode", mode, "--addr", f"127.0.0.1:{port}", "-c", str(conns), "-d", str(duration),
           "--user", user, "--password", "pw", "--csv"]
    if users:
        cmd += ["--users", str(users)]
    if tls:
        cmd.append("--tls")
    out = subprocess.run(cmd, text=True, capture_output=True, timeout=duration + 600)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "0,0,0,0,1,0"
    rate, mib, p50, p99, errors, sessions = line.split(",")
    return {"rate": float(rate), "mib": float(mib), "p50": float(p50), "p99": float(p99),
            "errors": int(errors), "sessions": int(sessions)}


def ratio(a, b):
    return a / b if b else float("nan")


def med(values):
    return statistics.median(values) if values else float("nan")


def spread(values):
    return (max(values) - min(values)) if values else float("nan")


def idle_memory(server, pids_fn, n, tls=False):
    """PSS growth per idle authenticated session, KiB."""
    base = pss_kib(pids_fn())
    port = PORTS["pop3d-tls"] if tls else server.port
    cmd = [BENCH, "run", "--mode", "idle", "--addr", f"127.0.0.1:{port}", "-c", str(n), "-d", "8",
           "--user", "i{}", "--users", "10000", "--password", "pw", "--csv"]
    if tls:
        cmd.append("--tls")
    p = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    held = None
    for line in p.stdout:
        if "sessions open" in line:
            held = int(line.split()[1])
            time.sleep(3)
            after = pss_kib(pids_fn())
            break
    rest = p.stdout.read()
    p.wait(timeout=300)
    fields = rest.strip().splitlines()[-1].split(",") if rest.strip() else ["0"] * 6
    errors = int(fields[4])
    if not held:
        return float("nan"), 0, errors
    return (after - base) / held, held, errors


def login_stat_ms(port, user="huge"):
    r = bench(port, "login", 1, 0.001, user=user)
    return r["p50"]


def summary(args, loads, results):
    """The throughput table: medians, spreads, p99s, errors, ratios."""
    print()
    print(f"{'load':40} {'pop3d':>12} {'dovecot':>12} {'ceiling':>12} {'vs dovecot':>11} {'of ceiling':>11}")
    for load in loads:
        key = "mib" if "MiB/s" in load else "rate"
        vals = {n: [r[key] for r in results[(load, n)]] for n in ("pop3d", "dovecot", "ceiling")}
        m = {n: med(v) for n, v in vals.items()}
        print(f"{load:40} {m['pop3d']:12.1f} {m['dovecot']:12.1f} {m['ceiling']:12.1f} "
              f"{ratio(m['pop3d'], m['dovecot']):10.1f}x {100 * ratio(m['pop3d'], m['ceiling']):10.0f}%")
        print(f"{'  spread (max-min)':40} {spread(vals['pop3d']):12.1f} {spread(vals['dovecot']):12.1f} "
              f"{spread(vals['ceiling']):12.1f}")
        p99 = {n: med([r['p99'] for r in results[(load, n)]]) for n in ("pop3d", "dovecot", "ceiling")}
        print(f"{'  p99 latency ms':40} {p99['pop3d']:12.2f} {p99['dovecot']:12.2f} {p99['ceiling']:12.2f}")
        errs = {n: sum(r['errors'] for r in results[(load, n)]) for n in ("pop3d", "dovecot", "ceiling")}
        print(f"{'  errors':40} {errs['pop3d']:12} {errs['dovecot']:12} {errs['ceiling']:12}")
        if args.postgres:
            b = [r[key] for r in results[(load, "postgres")]]
            print(f"{'  postgres backend':40} {med(b):12.1f}   postgres/maildir {ratio(med(b), m['pop3d']):.2f}x"
                  f"   spread {spread(b):.1f}   p99 {med([r['p99'] for r in results[(load, 'postgres')]]):.2f} ms"
                  f"   errors {sum(r['errors'] for r in results[(load, 'postgres')])}")
        if args.baseline:
            b = [r[key] for r in results[(load, "baseline")]]
            print(f"{'  baseline (--baseline)':40} {med(b):12.1f}   pop3d/baseline {ratio(m['pop3d'], med(b)):.2f}x"
                  f"   spread {spread(b):.1f}   p99 {med([r['p99'] for r in results[(load, 'baseline')]]):.2f} ms")


def lmtp_loads(args, servers):
    """LMTP deliveries of 4 KiB messages, 8 connections over 64 users, into
    pop3d's Maildir, pop3d's PostgreSQL and Dovecot's Maildir (dovecot-lmtpd),
    in rotation."""
    targets = [("pop3d", PORTS["pop3d-lmtp"]), ("dovecot", PORTS["dovecot-lmtp"])]
    if "postgres" in servers:
        targets.insert(1, ("postgres", PORTS["postgres-lmtp"]))
    results = {}
    for rep in range(args.reps):
        for name, port in targets:
            r = bench(port, "lmtp", 8, args.duration, user="l{}", users=64)
            results.setdefault(name, []).append(r)
            print(f"rep {rep + 1} LMTP deliveries/s (4 KiB)             {name:8} {r}", flush=True)
    return results


def print_lmtp(results):
    d = med([r["rate"] for r in results.get("dovecot", [])])
    print()
    for name, rs in results.items():
        rates = [r["rate"] for r in rs]
        print(f"LMTP deliveries/s, 4 KiB, {name:9} {med(rates):10.1f}  spread {spread(rates):8.1f}  "
              f"p99 {med([r['p99'] for r in rs]):7.2f} ms  errors {sum(r['errors'] for r in rs)}  "
              f"vs dovecot {ratio(med(rates), d):.2f}x")


def postgres_extras(work, server, n_idle):
    """On the PostgreSQL backend: idle sessions against the pool, and one
    1 GiB message (delivered with `pop3d deliver`) against memory."""
    server.stop()
    server.start()
    pid = server.proc.pid
    held_conns = []
    cmd = [BENCH, "run", "--mode", "idle", "--addr", f"127.0.0.1:{server.port}", "-c", str(n_idle), "-d", "8",
           "--user", "i{}", "--users", "10000", "--password", "pw", "--csv"]
    p = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    held = 0
    for line in p.stdout:
        if "sessions open" in line:
            held = int(line.split()[1])
            held_conns.append(pg_connections())
            break
    rest = p.stdout.read()
    p.wait(timeout=300)
    idle_errors = int(rest.strip().splitlines()[-1].split(",")[4]) if rest.strip() else -1
    gib_file = os.path.join(work, "gib.eml")
    with open(gib_file, "wb") as f:
        block = message(1 << 20, 0)
        for _ in range(1024):
            f.write(block)
    with open(os.path.join(work, "passwd"), "a") as f:
        f.write(f"gib:{{PLAIN}}pw::::{work}/home/gib\n")
    started = time.time()
    with open(gib_file, "rb") as f:
        subprocess.run([POP3D, "--log", "warn", "deliver", "--config", os.path.join(work, "postgres.toml"),
                        "--user", "gib"], stdin=f, check=True)
    deliver_s = time.time() - started
    os.remove(gib_file)
    server.stop()
    server.start()
    pid = server.proc.pid

    def hwm():
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))

    before = hwm()
    gib = bench(server.port, "retr", 1, 0.001, user="gib")
    return {"held": held, "idle_errors": idle_errors, "connections": max(held_conns or [-1]),
            "deliver_s": deliver_s, "gib": gib, "growth_mib": (hwm() - before) / 1024}


def print_postgres_extras(x):
    print(f"postgres backend: {x['held']} idle logged-in sessions ({x['idle_errors']} errors) held "
          f"{x['connections']} database connections (pool size 256 in the production preset)")
    print(f"postgres backend: 1 GiB message delivered in {x['deliver_s']:.1f} s; RETR {x['gib']['mib']:.0f} MiB/s, "
          f"errors {x['gib']['errors']}, server peak memory grew {x['growth_mib']:.1f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--quick", action="store_true", help="smaller loads, for a smoke run")
    ap.add_argument("--throughput-only", action="store_true",
                    help="only the login, small-RETR and 50 MiB loads (no idle, large-Maildir, flood or 1 GiB runs)")
    ap.add_argument("--baseline", metavar="POP3D",
                    help="another pop3d binary (an earlier commit's) to run the throughput loads "
                         "against in the same rotation, for a before/after comparison")
    ap.add_argument("--postgres", action="store_true",
                    help="also run every load on pop3d's PostgreSQL backend (a private server started here)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: Dovecot serves the same Maildirs as root here")
    subprocess.run(["sh", "-c", "ulimit -n 200000"], check=False)
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (200000, 200000))
    except (ValueError, OSError):
        pass
    work = tempfile.mkdtemp(prefix="pop3-bench-")
    os.chmod(work, 0o755)  # Dovecot's auth process runs as "dovecot"
    print(f"work dir {work}; building users and Maildirs ...", flush=True)
    huge_n = setup(work, args.quick)
    servers = {
        "pop3d": Server("pop3d", [POP3D, "--log", "warn", "serve", "--config", pop3d_config(work)], PORTS["pop3d"], work),
        "dovecot": Server("dovecot", ["dovecot", "-F", "-c", dovecot_config(work)], PORTS["dovecot"]),
        "ceiling": Server("ceiling", [BENCH, "ceiling", "--listen", f"127.0.0.1:{PORTS['ceiling']}",
                                      "--messages", "20", "--size", "4096"], PORTS["ceiling"]),
    }
    if args.baseline:
        # Its own copy of the Maildirs: two versions must not take turns
        # rewriting each other's index files.
        subprocess.run(["cp", "-al", os.path.join(work, "home"), os.path.join(work, "basehome")], check=True)
        base_cfg = pop3d_config(work, name="baseline.toml", port=PORTS["baseline"], tls_port=PORTS["baseline-tls"],
                                maildir=os.path.join(work, "basehome/%n/Maildir"))
        servers["baseline"] = Server("baseline", [os.path.abspath(args.baseline), "--log", "warn", "serve",
                                                  "--config", base_cfg], PORTS["baseline"], work)
    database = None
    if args.postgres:
        database = start_database(work)
        pg_cfg = postgres_config(work, database[2])
        sh(POP3D, "db", "migrate", "--config", pg_cfg)
        started = time.time()
        for user in [f"u{u}" for u in range(64)] + ["big"]:
            sh(POP3D, "--log", "warn", "migrate-maildir", "--from", os.path.join(work, "pop3d.toml"),
               "--config", pg_cfg, "--user", user)
        print(f"migrate-maildir: 65 users, {64 * 20 + 1} messages in {time.time() - started:.1f} s", flush=True)
        servers["postgres"] = Server("postgres", [POP3D, "--log", "warn", "serve", "--config", pg_cfg],
                                     PORTS["postgres"], work)
    rotation = [n for n in ("pop3d", "postgres", "baseline", "dovecot", "ceiling") if n in servers]
    ceiling_big = Server("ceiling-big", [BENCH, "ceiling", "--listen", f"127.0.0.1:{PORTS['ceiling-big']}",
                                         "--messages", "1", "--size", str(50 << 20)], PORTS["ceiling-big"])
    d = args.duration
    loads = {
        "logins/s (PLAIN)": lambda port: bench(port, "login", 8, d, users=64),
        "small RETR sessions/s (20 x 4 KiB)": lambda port: bench(port, "retr", 8, d, users=64),
        "one 50 MiB message, MiB/s": lambda port: bench(port, "retr", 1, d, user="big"),
    }
    results = {}
    try:
        for s in list(servers.values()) + [ceiling_big]:
            s.start()
        # Warm the caches once (Dovecot indexes, our listing cache).
        for name in rotation:
            if name == "ceiling":
                continue
            bench(servers[name].port, "retr", 8, 1, users=64)
            bench(servers[name].port, "retr", 1, 1, user="big")
        for rep in range(args.reps):
            for load, fn in loads.items():
                for name in rotation:
                    port = servers[name].port
                    if "50 MiB" in load and name == "ceiling":
                        port = ceiling_big.port
                    r = fn(port)
                    results.setdefault((load, name), []).append(r)
                    print(f"rep {rep + 1} {load:38} {name:8} {r}", flush=True)
        lmtp_results = lmtp_loads(args, servers)
        if args.postgres:
            pg_extra = postgres_extras(work, servers["postgres"], n_idle=1000 if args.quick else 10000)
        if args.throughput_only:
            summary(args, loads, results)
            print_lmtp(lmtp_results)
            if args.postgres:
                print_postgres_extras(pg_extra)
            return
        # Memory per idle authenticated session, each from a fresh process.
        n_idle = 1000 if args.quick else 10000
        servers["pop3d"].stop()
        servers["pop3d"].start()
        pop3d_pid = servers["pop3d"].proc.pid
        mem_pop3d, held, err = idle_memory(servers["pop3d"], lambda: [pop3d_pid], n_idle)
        servers["pop3d"].stop()
        servers["pop3d"].start()
        pop3d_pid = servers["pop3d"].proc.pid
        mem_tls, held_tls, err_tls = idle_memory(servers["pop3d"], lambda: [pop3d_pid], 2000, tls=True)
        mem_dovecot, held_d, err_d = idle_memory(servers["dovecot"], dovecot_pids, 1000)
        print(f"idle: pop3d {mem_pop3d:.1f} KiB x {held} ({err} errors), TLS {mem_tls:.1f} KiB x {held_tls}, "
              f"dovecot {mem_dovecot:.1f} KiB x {held_d} ({err_d} errors)", flush=True)
        # Login + STAT on a large Maildir, cold (no index) and warm.
        huge = os.path.join(work, "home/huge/Maildir")
        cold = {}
        warm = {}
        for name in [n for n in ("pop3d", "baseline", "dovecot") if n in servers]:
            where = huge.replace("/home/", "/basehome/") if name == "baseline" else huge
            subprocess.run(["chown", "-R", "vmail:vmail", os.path.dirname(where)], check=True)
            for f in os.listdir(where):
                if f.startswith("dovecot") or f.startswith("pop3d-uidlist"):
                    os.remove(os.path.join(where, f))
            servers[name].stop()
            subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)
            servers[name].start()
            cold[name] = login_stat_ms(servers[name].port)
            warm[name] = med([login_stat_ms(servers[name].port) for _ in range(7)])
            print(f"{name}: login+STAT on {huge_n} messages cold {cold[name]:.1f} ms warm {warm[name]:.1f} ms",
                  flush=True)
        # The same with sizes in the file names.
        cold_w = {}
        for name in [n for n in ("pop3d", "baseline") if n in servers]:
            servers[name].stop()
            subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=False)
            servers[name].start()
            cold_w[name] = login_stat_ms(servers[name].port, "hugew")
            print(f"{name}: login+STAT on {huge_n} messages with ,W= names, cold {cold_w[name]:.1f} ms", flush=True)
        if "baseline" in servers:
            servers["baseline"].stop()
        pop3d_pid = servers["pop3d"].proc.pid
        # Slow hashes under a login flood: the probe's NOOP latency.
        flood = bench(servers["pop3d"].port, "mixed", 8, d, user="a{}", users=8)
        # One 1 GiB message: growth of the server's peak memory.
        gib_dir = os.path.join(work, "home/gib/Maildir")
        os.makedirs(os.path.join(gib_dir, "cur"), exist_ok=True)
        with open(os.path.join(gib_dir, "cur", "1.M1P1.gib:2,S"), "wb") as f:
            block = message(1 << 20, 0)
            for _ in range(1024):
                f.write(block)
        with open(os.path.join(work, "passwd"), "a") as f:
            f.write(f"gib:{{PLAIN}}pw::::{work}/home/gib\n")
        servers["pop3d"].stop()
        servers["pop3d"].start()
        pid = servers["pop3d"].proc.pid

        def hwm():
            with open(f"/proc/{pid}/status") as f:
                return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))

        before = hwm()
        gib = bench(servers["pop3d"].port, "retr", 1, 0.001, user="gib")
        growth_mib = (hwm() - before) / 1024
    finally:
        for s in list(servers.values()) + [ceiling_big]:
            s.stop()
        if database:
            stop_database(database[0], database[1])
        shutil.rmtree(work, ignore_errors=True)

    summary(args, loads, results)
    print_lmtp(lmtp_results)
    print()
    print(f"idle sessions: pop3d {held} held ({err} errors), {mem_pop3d:.1f} KiB PSS each; "
          f"with TLS {held_tls} held ({err_tls} errors), {mem_tls:.1f} KiB each; "
          f"dovecot {held_d} held ({err_d} errors), {mem_dovecot:.1f} KiB each")
    print(f"login+STAT on {huge_n} messages: pop3d cold {cold['pop3d']:.1f} ms, warm {warm['pop3d']:.1f} ms; "
          f"dovecot cold {cold['dovecot']:.1f} ms, warm {warm['dovecot']:.1f} ms; "
          f"pop3d cold with ,W= names {cold_w['pop3d']:.1f} ms")
    if "baseline" in cold:
        print(f"baseline (--baseline): cold {cold['baseline']:.1f} ms, warm {warm['baseline']:.1f} ms, "
              f"cold with ,W= names {cold_w['baseline']:.1f} ms")
    print(f"ARGON2ID login flood ({flood['sessions']} logins): probe NOOP p50 {flood['p50']:.2f} ms, "
          f"p99 {flood['p99']:.2f} ms, errors {flood['errors']}")
    print(f"1 GiB message: {gib['mib']:.0f} MiB/s, errors {gib['errors']}, server peak memory grew {growth_mib:.1f} MiB")
    if args.postgres:
        print_postgres_extras(pg_extra)


if __name__ == "__main__":
    main()
