#!/usr/bin/python3
"""The benchmark harness behind bench/run: runs every system's adapter on
every scenario, interleaved (A B C A B C ... for several rounds, the median
kept), then writes docs/benchmarks.md and the plots in docs/bench/.

  harness.py --build DIR [--rounds N] [--seconds S] [--only SCENARIO,...]
             [--tfb-seconds S]    (tfb: the TechEmpower test types, bench/tfb/)
  harness.py --build DIR --smoke SYSTEM      (CI: every scenario of one
                                              system, briefly; exit 1 on failure)
"""
import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JARS = ["HikariCP.jar", "postgresql.jar", "sqlite-jdbc.jar", "mariadb-java-client.jar",
        "slf4j-api.jar", "slf4j-nop.jar"]

# scenario -> (systems, matrix of (threads, pool))
SCENARIOS = {
    # lock: the floor, one uncontended pthread mutex lock and unlock
    "cycle": (["dbscope", "dbscope-fifo", "dbscope-noval", "lock", "zdb", "hikari", "sqlalchemy"],
              [(t, p) for p in (4, 16) for t in (1, 2, 8, 32)]),
    "sqlite": (["dbscope", "dbscope-fifo", "dbscope-noval", "direct", "none", "zdb", "hikari",
                "sqlalchemy"],
               [(1, 8), (2, 8), (8, 8)]),
    "pg": (["dbscope", "dbscope-fifo", "dbscope-noval", "dbscope-rollback", "direct", "none", "zdb",
            "hikari", "sqlalchemy", "bouncer", "bouncer-reset"],
           [(t, p) for p in (4, 8) for t in (1, 8, 32)]),
    # the pg unit on a throwaway MariaDB server, when the build has the backend
    "mysql": (["dbscope", "dbscope-rollback", "direct", "zdb", "hikari"],
              [(t, p) for p in (4, 8) for t in (1, 8, 32)]),
    "fair": (["dbscope", "dbscope-fifo", "zdb", "hikari", "sqlalchemy"], [(32, 4)]),
    # what observability costs: the uncontended cycle, on and off
    "observe": (["dbscope", "dbscope-blind"], [(1, 4)]),
    "recovery": (["dbscope", "hikari", "sqlalchemy", "zdb", "bouncer"], [(8, 4)]),
}
# direct owns a connection a thread: its matrix is the thread counts alone
DIRECT_PG = [(1, 1), (4, 4), (8, 8), (32, 32)]
NONE_MATRIX = {"sqlite": [(1, 8), (8, 8)], "pg": [(1, 4), (8, 4)]}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Env:
    """Databases and the commands of each adapter."""

    def __init__(self, build, work):
        self.build, self.work = build, work
        self.native = os.path.join(build, "bench", "bench_native")
        self.cp = ":".join([os.path.join("/usr/share/java", j) for j in JARS] +
                           [os.path.join(build, "bench", "java")])
        self.sqlite = os.path.join(work, "bench.db")
        subprocess.run([self.native, "setup", "sqlite", "--db", "sqlite:" + self.sqlite], check=True)
        self.pg = None
        self.my = None
        self.bouncers = {}
        self.cpu = None
        self.mycpu = None
        self.shared = set()  # servers this run found running and leaves so

    def server_cpu(self, scenario="pg"):
        """The server's CPU sampler for a scenario (PostgreSQL's processes
        or MariaDB's threads), started on first use; None where there is
        none."""
        if scenario == "mysql":
            if self.my and not self.mycpu:
                try:
                    with open(os.path.join(self.my["dir"], "data", "mariadbd.pid")) as f:
                        self.mycpu = ServerCPU(int(f.readline()), threads=True)
                except (OSError, ValueError):
                    self.mycpu = None
            return self.mycpu
        if self.pg and not self.cpu:
            try:
                with open(os.path.join(self.pg["dir"], "data", "postmaster.pid")) as f:
                    self.cpu = ServerCPU(int(f.readline()))
            except (OSError, ValueError):
                self.cpu = None
        return self.cpu

    # -- MariaDB --
    def mysql_available(self):
        """The server binary is installed and bench_native has the backend."""
        if not (shutil.which("mariadbd") or os.path.exists("/usr/sbin/mariadbd")):
            return False
        try:
            cache = open(os.path.join(self.build, "CMakeCache.txt")).read()
        except OSError:
            return False
        return re.search(r"^DBSCOPE_WITH_MYSQL:BOOL=(ON|1|TRUE|YES)$", cache, re.M | re.I) is not None

    def start_server(self, script, name):
        """Starts a throwaway server with the tests' script in work/name;
        returns its directory and a reader of the files it writes there.
        With DBSCOPE_BENCH_SERVERS=DIR (the smoke tests' CTest fixture), the
        server already running in DIR/name instead, left running at the end."""
        shared = os.environ.get("DBSCOPE_BENCH_SERVERS")
        if shared and os.path.exists(os.path.join(shared, name, "url")):
            d = os.path.join(shared, name)
            self.shared.add(name)
        else:
            d = os.path.join(self.work, name)
            subprocess.run(["sh", os.path.join(ROOT, "tests", script), "start", d],
                           check=True, capture_output=True)
        return d, lambda f: open(os.path.join(d, f)).read().strip()

    def start_my(self):
        if self.my:
            return
        d, rd = self.start_server("mysql_server.sh", "my")
        self.my = {"dir": d, "port": rd("port"), "pw": rd("password"), "url": rd("url")}
        subprocess.run([self.native, "setup", "mysql", "--db", self.my["url"]], check=True,
                       capture_output=True)

    # -- PostgreSQL and PgBouncer --
    def start_pg(self):
        if self.pg:
            return
        d, rd = self.start_server("pg_server.sh", "pg")
        self.pg = {"dir": d, "port": rd("port"), "pw": rd("password"), "pg_ctl": rd("pg_ctl")}
        self.pg["libpq"] = "postgresql://dbscope:%s@/dbscope?host=%s&port=%s" % (
            self.pg["pw"], d, self.pg["port"])
        subprocess.run([self.native, "setup", "pg", "--db", self.pg["libpq"]], check=True,
                       capture_output=True)

    def bouncer_url(self, pool, reset=False):
        """A PgBouncer in transaction mode with `pool` server connections;
        reset: it runs DISCARD ALL on the server connection after every
        transaction (server_reset_query_always), the one peer that resets
        per transaction as dbscope does."""
        key = (pool, reset)
        if key in self.bouncers:
            return self.bouncers[key]["url"]
        d = os.path.join(self.work, "bouncer%d%s" % (pool, "-reset" if reset else ""))
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        port = free_port()
        with open(os.path.join(d, "users.txt"), "w") as f:
            f.write('"dbscope" "%s"\n' % self.pg["pw"])
        with open(os.path.join(d, "pgbouncer.ini"), "w") as f:
            f.write("[databases]\ndbscope = host=%s port=%s dbname=dbscope\n"
                    "[pgbouncer]\nlisten_addr = \nlisten_port = %d\nunix_socket_dir = %s\n"
                    "auth_type = scram-sha-256\nauth_file = %s/users.txt\npool_mode = transaction\n"
                    "default_pool_size = %d\nmax_client_conn = 200\nlogfile = %s/log\n"
                    "pidfile = %s/pid\n" % (self.pg["dir"], self.pg["port"], port, d, d, pool, d, d))
            if reset:
                f.write("server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n")
        for n in ("users.txt", "pgbouncer.ini"):
            os.chmod(os.path.join(d, n), 0o644)
        cmd = ["/usr/sbin/pgbouncer", "-q", os.path.join(d, "pgbouncer.ini")]
        if os.getuid() == 0:
            cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + cmd
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(os.path.join(d, ".s.PGSQL.%d" % port)):
                break
            time.sleep(0.05)
        url = "postgresql://dbscope:%s@/dbscope?host=%s&port=%d" % (self.pg["pw"], d, port)
        self.bouncers[key] = {"proc": proc, "url": url}
        return url

    def restart_pg(self, down_s=1.0):
        """pg_ctl stop, a pause, pg_ctl start; returns when the server is back."""
        data = os.path.join(self.pg["dir"], "data")
        pre = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(pre + [self.pg["pg_ctl"], "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True)
        time.sleep(down_s)
        subprocess.run(pre + [self.pg["pg_ctl"], "-D", data, "-l", os.path.join(data, "server.out"),
                              "-w", "start"], capture_output=True, check=True)
        return time.time()

    def stop(self):
        for cpu in (self.cpu, self.mycpu):
            if cpu:
                cpu.stop()
        for b in self.bouncers.values():
            b["proc"].terminate()
            b["proc"].wait()
        if self.pg and "pg" not in self.shared:
            subprocess.run(["sh", os.path.join(ROOT, "tests", "pg_server.sh"), "stop", self.pg["dir"]],
                           capture_output=True)
        if self.my and "my" not in self.shared:
            subprocess.run(["sh", os.path.join(ROOT, "tests", "mysql_server.sh"), "stop",
                            self.my["dir"]], capture_output=True)

    # -- adapters --
    def command(self, system, scenario, matrix, seconds, warmup, timeline=False):
        pg = scenario in ("pg", "recovery")
        if pg:
            self.start_pg()
        m = ",".join("%d:%d" % tp for tp in matrix)
        common = ["--matrix", m, "--seconds", str(seconds), "--warmup", str(warmup)]
        if timeline:
            common.append("--timeline")
        if scenario == "mysql":
            # every system over TCP on loopback, as the server's URL says
            self.start_my()
            if system == "hikari":
                return ["java", "-Xmx512m", "-cp", self.cp, "Bench", scenario, "--db",
                        "jdbc:mariadb://127.0.0.1:%s/dbscope" % self.my["port"],
                        "--user", "dbscope", "--password", self.my["pw"]] + common
            if system == "zdb":
                db = "mysql://127.0.0.1:%s/dbscope?user=dbscope&password=%s" % (
                    self.my["port"], self.my["pw"])
                return [self.native, "zdb", scenario, "--db", db, "--check-url",
                        self.my["url"]] + common
            return [self.native, system, scenario, "--db", self.my["url"]] + common
        if system == "hikari":
            if pg:
                db = ["--db", "jdbc:postgresql://127.0.0.1:%s/dbscope" % self.pg["port"],
                      "--user", "dbscope", "--password", self.pg["pw"]]
            else:
                db = ["--db", "jdbc:sqlite:" + self.sqlite]
            return ["java", "-Xmx512m", "-cp", self.cp, "Bench", scenario] + db + common
        if system == "sqlalchemy":
            db = ("postgresql+psycopg2://dbscope:%s@/dbscope?host=%s&port=%s" % (
                self.pg["pw"], self.pg["dir"], self.pg["port"])) if pg else "sqlite:///" + self.sqlite
            return ["/usr/bin/python3", os.path.join(ROOT, "bench", "peers", "sqlalchemy", "bench.py"),
                    scenario, "--db", db] + common
        if system == "zdb":
            # libzdb's URL takes no socket port: TCP on loopback for it
            db = ("postgresql://127.0.0.1:%s/dbscope?user=dbscope&password=%s" % (
                self.pg["port"], self.pg["pw"])) if pg else "sqlite://" + self.sqlite
            extra = ["--check-url", self.pg["libpq"]] if pg else []
            return [self.native, "zdb", scenario, "--db", db] + extra + common
        if system in ("bouncer", "bouncer-reset"):
            url = self.bouncer_url(matrix[0][1], system == "bouncer-reset")
            return [self.native, "bouncer", scenario, "--db", url, "--check-url",
                    self.pg["libpq"]] + common
        db = self.pg["libpq"] if pg else "sqlite:" + self.sqlite
        return [self.native, system, scenario, "--db", db] + common


def parse(out):
    res, tl = [], []
    for line in out.splitlines():
        if line.startswith("RESULT "):
            res.append(json.loads(line[7:]))
        elif line.startswith("TIMELINE "):
            tl.append(json.loads(line[9:]))
    return res, tl


class ServerCPU:
    """A database server's CPU time, from /proc/.../schedstat, sampled every
    50 ms in a thread; at(t) interpolates the total at time t. PostgreSQL:
    every process of the postmaster (backends, WAL writer, checkpointer
    ...); MariaDB (threads=True): every thread of mariadbd. A process or
    thread that exits keeps the last value sampled (the little it ran after
    that is missed: connect-per-request systems are undercounted)."""

    def __init__(self, pid, threads=False):
        self.pm = pid
        self.threads = threads
        self.last, self.samples, self.stopping = {}, [], False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def sample(self):
        if self.threads:
            try:
                tasks = ["%d/task/%s" % (self.pm, t) for t in os.listdir("/proc/%d/task" % self.pm)]
            except OSError:
                tasks = []
        else:
            try:
                kids = open("/proc/%d/task/%d/children" % (self.pm, self.pm)).read().split()
            except OSError:
                kids = []
            tasks = [str(self.pm)] + kids
        for pid in tasks:
            try:
                ns = int(open("/proc/%s/schedstat" % pid).read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            self.last[pid] = ns
        with self.lock:
            self.samples.append((time.time(), sum(self.last.values())))
            if len(self.samples) > 20000:
                del self.samples[:10000]

    def loop(self):
        while not self.stopping:
            self.sample()
            time.sleep(0.05)

    def at(self, t):
        with self.lock:
            s = list(self.samples)
        for i in range(1, len(s)):
            if s[i][0] >= t:
                (t0, c0), (t1, c1) = s[i - 1], s[i]
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return s[-1][1] if s else 0

    def stop(self):
        self.stopping = True
        self.thread.join()


def run_adapter(env, system, scenario, matrix, seconds, warmup, timeline=False, timeout=600):
    cmd = env.command(system, "cycle" if scenario == "observe" else scenario, matrix, seconds,
                      warmup, timeline)
    cpu = env.server_cpu(scenario) if scenario in ("pg", "mysql") else None
    out, ends = [], []
    with tempfile.TemporaryFile(mode="w+") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        for line in p.stdout:
            out.append(line)
            if line.startswith("RESULT "):
                ends.append(time.time())
        p.wait()
        timer.cancel()
        err.seek(0)
        stderr = err.read()
    res, tl = parse("".join(out))
    if cpu and len(ends) == len(res):
        # each point's measured window ends about when its RESULT line
        # comes (adapters print and flush it as soon as the point is done)
        time.sleep(0.06)
        for r, end in zip(res, ends):
            if r.get("ops"):
                used = cpu.at(end) - cpu.at(end - r["secs"])
                r["server_us"] = used / 1e3 / r["ops"]
    if p.returncode != 0 or len(res) != len(matrix):
        log("  %s %s failed (exit %s): %s" % (system, scenario, p.returncode, stderr[-800:]))
    return res, tl, cmd


def matrix_for(system, scenario):
    if system == "direct" and scenario in ("pg", "mysql"):
        return DIRECT_PG
    if system == "none":
        return NONE_MATRIX.get(scenario, [])
    if system in ("bouncer", "bouncer-reset"):
        return None  # one PgBouncer per pool size: split below
    return SCENARIOS[scenario][1]


# -- smoke (CI) --

def smoke(env, system):
    ok = True
    for scenario in ("cycle", "sqlite", "pg", "mysql", "fair"):
        systems, matrix = SCENARIOS[scenario]
        if system not in systems or scenario == "observe":
            continue
        if scenario == "mysql" and not env.mysql_available():
            print("skip %s mysql: no MariaDB server or a build without it" % system, flush=True)
            continue
        m = [(2, 2)] if scenario != "fair" else [(4, 2)]
        if system == "direct":
            m = [(2, 2)]
        res, _, cmd = run_adapter(env, system, scenario, m, 0.5, 0.1)
        good = len(res) == 1 and res[0]["ops"] > 0 and res[0]["check"] == "ok" and res[0]["errors"] == 0
        print("%s %s %s: %s" % ("ok" if good else "FAIL", system, scenario,
                                 json.dumps(res[0]) if res else "no result"), flush=True)
        if not good:
            print("  command: %s" % " ".join(cmd))
        ok = ok and good
    return ok


# -- the full run --

def median_result(results):
    results = sorted(results, key=lambda r: r["ops_s"])
    return results[len(results) // 2]


# Two threads on two cores running SQLite read transactions spend a third of
# their time queued on SQLite's own lock of the shared WAL index (futex sleep
# and wake-up, in perf); how long each convoy lasts changes from one run to
# the next for every system alike, so this cheap scenario gets more rounds.
EXTRA_ROUNDS = {"sqlite": 2}


def measure(env, scenarios, rounds, seconds, warmup):
    raw = {}      # (scenario, system, t, p) -> [results]
    commands = {}
    for scenario in scenarios:
        if scenario in ("recovery", "tfb"):
            continue
        if scenario == "mysql" and not env.mysql_available():
            log("mysql: skipped (no MariaDB server, or a build without DBSCOPE_WITH_MYSQL)")
            continue
        systems = SCENARIOS[scenario][0]
        n = rounds + EXTRA_ROUNDS.get(scenario, 0)
        for rnd in range(n):
            # Each round starts with another system, and every other round
            # runs them in reverse: whatever the first run of a round meets
            # (the last round's dead rows, a checkpoint), or what the run
            # before a system leaves behind (a pooler's server connections
            # going away), falls on each system in turn, not on the one
            # that always follows the same neighbour.
            k = rnd % len(systems)
            order = systems[k:] + systems[:k]
            if rnd % 2:
                order.reverse()
            for system in order:
                if system in ("bouncer", "bouncer-reset"):
                    groups = {}
                    for t, p in SCENARIOS[scenario][1]:
                        groups.setdefault(p, []).append((t, p))
                    batches = list(groups.values())
                else:
                    batches = [matrix_for(system, scenario)]
                for m in batches:
                    if not m:
                        continue
                    log("round %d/%d: %s %s %s" % (rnd + 1, n, scenario, system, m))
                    sec = seconds * (2 if scenario in ("fair", "observe") else 1)
                    res, _, cmd = run_adapter(env, system, scenario, m, sec, warmup)
                    commands[(scenario, system)] = cmd
                    for r in res:
                        r["scenario"] = scenario
                        raw.setdefault((scenario, system, r["threads"], r["pool"]), []).append(r)
    med = {k: median_result(v) for k, v in raw.items()}
    return med, commands


def recovery(env, seconds=8.0, restart_at=2.0):
    out = {}
    env.start_pg()
    for system in SCENARIOS["recovery"][0]:
        cmd = env.command(system, "recovery", [(8, 4)], seconds, 0.5, timeline=True)
        log("recovery: %s" % system)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5 + restart_at + (2.0 if system == "hikari" else 0.0))
        down = time.time()
        back = env.restart_pg()
        stdout, stderr = p.communicate(timeout=120)
        res, tl = parse(stdout)
        if not tl:
            log("  no timeline from %s: %s" % (system, stderr[-500:]))
            continue
        t = tl[0]
        ops, errs, start = t["ops"], t["errors"], t["start"]
        slot = lambda ts: int((ts - start) * 10)
        before = [x for x in ops[:max(slot(down), 1)] if x > 0]
        base = statistics.median(before) if before else 0
        b = max(slot(back), 0)
        first = next(((i - b) / 10.0 for i in range(b, len(ops)) if ops[i] > 0), None)
        rec = None
        for i in range(b, len(ops)):
            if base and ops[i] >= 0.9 * base:
                rec = (i - b) / 10.0
                break
        out[system] = {"baseline_per_s": base * 10, "recovered_s": rec, "first_s": first,
                       "errors": sum(errs),
                       "down_s": round(back - down, 2), "timeline": t, "down": down, "back": back,
                       "command": " ".join(cmd)}
        time.sleep(1)
    return out


def memory(env):
    env.start_pg()
    rows = []
    for kind, url in (("sqlite", "sqlite:" + env.sqlite), ("pg", env.pg["libpq"])):
        p = subprocess.run([env.native, "memory", kind, "--db", url], capture_output=True, text=True)
        for line in p.stdout.splitlines():
            if line.startswith("MEMORY "):
                rows.append(json.loads(line[7:]))
    return rows


def versions():
    def cmd(c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=60).stdout.strip() or \
                subprocess.run(c, capture_output=True, text=True, timeout=60).stderr.strip()
        except Exception:
            return "?"

    def deb(pkg):
        return cmd(["dpkg-query", "-W", "-f=${Version}", pkg]) or "?"

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    model = re.search(r"Model name:\s*(.*)", cmd(["lscpu"]))
    mem = re.search(r"MemTotal:\s*(\d+)", open("/proc/meminfo").read())
    debian = open("/etc/debian_version").read().strip() if os.path.exists("/etc/debian_version") else "?"
    return {
        "machine": "%s, %d CPUs, %.1f GiB, Linux %s, Debian %s" % (
            model.group(1) if model else platform.processor(), os.cpu_count(),
            int(mem.group(1)) / 1048576 if mem else 0, platform.release(), debian),
        "dbscope": cmd(["git", "-C", ROOT, "describe", "--always", "--dirty"]),
        "SQLite": deb("libsqlite3-0"),
        "PostgreSQL server": deb("postgresql"),
        "libpq": deb("libpq5"),
        "libzdb": deb("libzdb-dev"),
        "HikariCP": deb("libhikaricp-java"),
        "JDBC (PostgreSQL / SQLite)": "%s / %s" % (deb("libpostgresql-jdbc-java"),
                                                  deb("libxerial-sqlite-jdbc-java")),
        "Java": java[0] if java else "?",
        "SQLAlchemy": deb("python3-sqlalchemy"),
        "psycopg2": deb("python3-psycopg2"),
        "Python": deb("python3"),
        "PgBouncer": deb("pgbouncer"),
        "MariaDB server": deb("mariadb-server"),
        "libmariadb (Connector/C)": deb("libmariadb3"),
        "MariaDB JDBC": deb("libmariadb-java"),
    }


def sqlite_sync(env):
    """What durable SQLite commits cost: one-row insert units through dbscope
    by default (on disk when acknowledged: the shared WAL sync) and with
    ?synchronous=normal, interleaved (bench/sqlite_sync.c), at 1 and 8
    threads: {threads: {"default": us, "normal": us, "command": ...}}."""
    exe = os.path.join(env.build, "bench", "bench_sqlite_sync")
    out = {}
    for threads, units in ((1, 300), (8, 2000)):
        cmd = [exe, str(units), "5", env.work, str(threads)]
        log("sqlite sync: %s" % " ".join(cmd))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log("sqlite sync failed: %s" % r.stderr.strip())
            continue
        row = {"command": " ".join(cmd)}
        for line in r.stdout.splitlines()[1:]:
            f = line.split(",")
            row[f[0]] = float(f[2])
        out[str(threads)] = row
    return out


def tfb(work, seconds):
    """The tfb scenario: bench/tfb/tfb.py's run (dbscope's tfb-server and
    its Go, Node.js and Python peers under wrk), built by bench/tfb/prepare.sh
    into build/tfb; its results go into the report's tfb section."""
    build = os.path.join(ROOT, "build", "tfb")
    # what does not build is reported "not built" by the run
    subprocess.run([os.path.join(ROOT, "bench", "tfb", "prepare.sh"), build])
    sys.path.insert(0, os.path.join(ROOT, "bench", "tfb"))
    import tfb as runner  # bench/tfb/tfb.py
    d = os.path.join(work, "tfb")
    os.makedirs(d)
    os.chmod(d, 0o755)
    try:
        res = runner.run(build, d, seconds=seconds)
    except (OSError, subprocess.SubprocessError, SystemExit) as e:
        # the rest of the report is still worth writing
        log("tfb: the scenario failed: %r" % e)
        return None
    res["command"] = "bench/run (its tfb scenario, --tfb-seconds %g)" % seconds
    res["root"] = ROOT
    runner.print_summary(res)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--smoke")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--only", default="cycle,sqlite,pg,mysql,fair,observe,recovery,tfb")
    ap.add_argument("--tfb-seconds", type=float, default=5.0)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="dbscope-bench-")
    os.chmod(work, 0o755)
    env = Env(args.build, work)
    try:
        if args.smoke:
            sys.exit(0 if smoke(env, args.smoke) else 1)
        t0 = time.time()
        scenarios = args.only.split(",")
        med, commands = measure(env, scenarios, args.rounds, args.seconds, args.warmup)
        rec = recovery(env) if "recovery" in scenarios else {}
        sync = sqlite_sync(env) if "sqlite" in scenarios else {}
        tfb_res = tfb(work, args.tfb_seconds) if "tfb" in scenarios else None
        mem = memory(env)
        import report  # bench/report.py
        report.write(args.out, med, commands, rec, mem, versions(), {
            "rounds": args.rounds, "extra_rounds": EXTRA_ROUNDS,
            "seconds": args.seconds, "warmup": args.warmup,
            "elapsed_s": time.time() - t0, "argv": " ".join(sys.argv[1:]), "root": ROOT,
            "sqlite_sync": sync, "tfb": tfb_res})
    finally:
        env.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
