#!/usr/bin/python3
"""The TechEmpower test types on dbscope's tfb-server and its peers (Go
net/http + pgx, Node.js + postgres, FastAPI + asyncpg), side by side on one
throwaway PostgreSQL with the same tables and the same load generator (wrk).
bench/tfb/run.sh and bench/run's `tfb` scenario run it.

  tfb.py --build DIR [--seconds S] [--warmup S] [--conns 16,64,256]
         [--systems dbscope-loop,...,python] [--tests json,...] [--pool N]
         [--smoke] [--out DIR] [--no-report]

For each system: start its server, check every route against the
verifier's rules (a system that fails is not measured), then for each test
type and connection count run `wrk --latency` and record requests/s, p99,
errors, and the CPU time (utime + stime from /proc) of the server's whole
process tree and of its PostgreSQL backends, before and after, per
request. Writes OUT/bench/tfb.json and the tfb section of OUT/benchmarks.md,
and prints the targets.
"""
import argparse
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))  # bench/, for report.py

import report  # noqa: E402  bench/report.py: the section, the targets

TESTS = report.TFB_TESTS
SYSTEMS = report.TFB_SYSTEMS
CLK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- CPU and memory from /proc ----

def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    """pid and every descendant of it."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo += children(p)
    return seen


def cpu_ticks(pids):
    """{pid: utime + stime in clock ticks (all its threads)} of those alive."""
    out = {}
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rindex(")") + 2:].split()
        out[p] = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat
    return out


def cpu_used(before, after):
    """Clock ticks used between two cpu_ticks() readings: what each process
    alive at the end ran since the first reading (all of it, if it came
    since). A process that exited in between is not counted (the few ticks
    it ran in the window are missed, rather than its whole life subtracted)."""
    return sum(t - before.get(p, 0) for p, t in after.items())


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                m = re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M)
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


# ---- the database ----

class Postgres:
    """A throwaway server from tests/pg_server.sh (as bench/run's pg
    scenario starts it), or the one DBSCOPE_BENCH_SERVERS/pg already runs;
    the TechEmpower tables made once with create-postgres.sql."""

    def __init__(self, work):
        shared = os.environ.get("DBSCOPE_BENCH_SERVERS")
        self.own = not (shared and os.path.exists(os.path.join(shared, "pg", "url")))
        self.dir = os.path.join(work, "pg") if self.own else os.path.join(shared, "pg")
        if self.own:
            subprocess.run(["sh", os.path.join(ROOT, "tests", "pg_server.sh"), "start", self.dir],
                           check=True, capture_output=True)
        rd = lambda f: open(os.path.join(self.dir, f)).read().strip()
        self.port, self.pw = rd("port"), rd("password")
        self.pg_ctl = rd("pg_ctl")
        self.super_url = rd("super_url")
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            self.postmaster = int(f.readline())
        # TCP on loopback without TLS for every system, as TechEmpower runs
        self.url = "postgresql://dbscope:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (
            self.pw, self.port)
        self.url_plain = "postgres://dbscope:%s@127.0.0.1:%s/dbscope" % (self.pw, self.port)

    def psql(self, *args, **kw):
        psql = os.path.join(os.path.dirname(self.pg_ctl), "psql")
        return subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.super_url] +
                              list(args), capture_output=True, text=True, **kw)

    def setup(self):
        have = self.psql("-At", "-c", "SELECT count(*) FROM pg_tables WHERE tablename = 'world'")
        if have.returncode == 0 and have.stdout.strip() == "1":
            return
        r = self.psql("-v", "role=dbscope", "-f", os.path.join(HERE, "create-postgres.sql"))
        if r.returncode != 0:
            raise SystemExit("tfb: making the tables failed: %s" % r.stderr.strip())

    def pids(self):
        """The client backends of the benchmark's role (not autovacuum,
        the checkpointer or the WAL writer, whose work after /updates would
        land on whichever point runs then)."""
        out = []
        for p in children(self.postmaster):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    if f.read().startswith(b"postgres: dbscope "):
                        out.append(p)
            except OSError:
                pass
        return out

    def stop(self):
        if self.own:
            subprocess.run(["sh", os.path.join(ROOT, "tests", "pg_server.sh"), "stop", self.dir],
                           capture_output=True)


# ---- the systems ----

def pipeline_flag(exe):
    """tfb-server's option for the pipeline depth, as its --help names it."""
    try:
        h = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=10)
        text = h.stdout + h.stderr
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    return "--pipeline-depth" if "--pipeline-depth" in text else "--pipeline"


def command(system, build, pg, addr, pool, ncpu):
    """(argv, env) of a system's server, or None when it is not built."""
    env = dict(os.environ)
    per_worker = str(max(1, pool // ncpu))
    if system.startswith("dbscope"):
        exe = os.path.join(build, "dbscope", "examples", "tfb", "tfb-server")
        if not os.access(exe, os.X_OK):
            return None
        env.update({"DATABASE_URL": pg.url, "DB_POOL_SIZE": str(pool), "DB_MAX_OVERFLOW": "0"})
        mode = "threads" if system == "dbscope-threads" else "loop"
        argv = [exe, "--mode", mode, "--listen", addr]
        if mode == "loop":
            argv += ["--threads", str(ncpu)]
        if system == "dbscope-nopipe":
            argv += [pipeline_flag(exe), "0"]
        return argv, env
    if system == "go":
        exe = os.path.join(build, "tfb-go")
        if not os.access(exe, os.X_OK):
            return None
        env["DATABASE_URL"] = pg.url
        return [exe, "-listen", addr, "-pool", str(pool)], env
    if system == "node":
        if not os.path.isdir(os.path.join(HERE, "node", "node_modules", "postgres")):
            return None
        env["DATABASE_URL"] = pg.url_plain
        return ["node", os.path.join(HERE, "node", "app.js"), "--listen", addr,
                "--workers", str(ncpu), "--pool", per_worker], env
    if system == "python":
        env["DATABASE_URL"] = pg.url
        return ["/usr/bin/python3", os.path.join(HERE, "python", "run.py"), "--listen", addr,
                "--workers", str(ncpu), "--pool", per_worker], env
    raise ValueError(system)


class Server:
    def __init__(self, argv, env, logpath):
        self.log = open(logpath, "w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def pids(self):
        return tree(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def get(base, path, timeout=10):
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()


def wait_up(server, base, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if server.proc.poll() is not None:
            return False
        try:
            get(base, "/json", timeout=2)
            return True
        except OSError:
            time.sleep(0.2)
    return False


FORTUNE_ADDED = "Additional fortune added at request time."


def verify(base, pg):
    """The verifier's main rules (toolset/test_types/*/verify.py) for each
    route, and that /updates persists what it answers; returns a list of
    problems (empty: passes)."""
    bad = []

    def check(path, want_type):
        try:
            st, h, body = get(base, path)
        except Exception as e:  # urllib raises several kinds
            bad.append("%s: %s" % (path, e))
            return None
        if st != 200:
            bad.append("%s: status %d" % (path, st))
        for k in ("server", "date"):
            if k not in h:
                bad.append("%s: no %s header" % (path, k.title()))
        if want_type not in h.get("content-type", ""):
            bad.append("%s: Content-Type %r" % (path, h.get("content-type")))
        return body

    def world(o, path):
        if not (isinstance(o, dict) and isinstance(o.get("id"), int) and
                isinstance(o.get("randomNumber"), int) and 1 <= o["id"] <= 10000):
            bad.append("%s: not a world row: %r" % (path, o))

    b = check("/json", "application/json")
    # the verifier compares these two in lower case
    if b is not None and {k.lower(): str(v).lower() for k, v in json.loads(b).items()} != {
            "message": "hello, world!"}:
        bad.append("/json: %r" % b[:80])
    b = check("/plaintext", "text/plain")
    if b is not None and b.lower() != b"hello, world!":
        bad.append("/plaintext: %r" % b[:80])
    b = check("/db", "application/json")
    if b is not None:
        world(json.loads(b), "/db")
    for q, n in (("20", 20), ("0", 1), ("foo", 1), ("501", 500), ("", 1)):
        for route in ("/queries", "/updates"):
            path = "%s?queries=%s" % (route, q)
            b = check(path, "application/json")
            if b is None:
                continue
            rows = json.loads(b)
            if not isinstance(rows, list) or len(rows) != n:
                bad.append("%s: %s rows, want %d" % (path, len(rows) if isinstance(rows, list)
                                                     else "no", n))
                continue
            for r in rows[:3]:
                world(r, path)
    b = check("/updates?queries=10", "application/json")
    if b is not None:
        rows = json.loads(b)
        want = {r["id"]: r["randomNumber"] for r in rows}
        q = pg.psql("-At", "-F", " ", "-c", "SELECT id, randomnumber FROM world WHERE id IN (%s)" %
                    ",".join(str(int(i)) for i in want))
        have = dict(tuple(int(x) for x in line.split()) for line in q.stdout.split("\n") if line)
        if q.returncode != 0 or have != want:
            bad.append("/updates: the table does not hold what it answered (%d of %d rows)" % (
                sum(have.get(i) == v for i, v in want.items()), len(want)))
    b = check("/fortunes", "text/html")
    if b is not None:
        text = b.decode("utf-8")
        rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", re.sub(r"\s*\n\s*", "", text))
        msgs = [html.unescape(m) for _, m in rows]
        if len(rows) != 13 or FORTUNE_ADDED not in msgs or msgs != sorted(msgs):
            bad.append("/fortunes: %d rows, added one %s, %s" % (
                len(rows), "present" if FORTUNE_ADDED in msgs else "missing",
                "sorted" if msgs == sorted(msgs) else "not sorted"))
        if "&lt;script&gt;" not in text:
            bad.append("/fortunes: the <script> fortune is not escaped")
    return bad


# ---- wrk ----

def parse_wrk(out):
    def num(pat, default=None):
        m = re.search(pat, out)
        return float(m.group(1)) if m else default

    def dur_us(s, unit):
        return float(s) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]

    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": num(r"Requests/sec:\s+([\d.]+)", 0.0),
        "requests": int(num(r"(\d+) requests in", 0)),
        "p99_us": dur_us(*m.groups()) if m else None,
        "non2xx": int(num(r"Non-2xx or 3xx responses: (\d+)", 0)),
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def wrk(url, conns, seconds, ncpu):
    threads = max(1, min(ncpu, conns))
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", "%gs" % seconds, "--timeout", "8s",
           "--latency", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    res = parse_wrk(r.stdout)
    res["cmd"] = cmd
    return res


def measure_point(server, pg, base, path, conns, seconds, ncpu):
    s0, d0, t0 = cpu_ticks(server.pids()), cpu_ticks(pg.pids()), time.time()
    res = wrk(base + path, conns, seconds, ncpu)
    t1 = time.time()
    # the trees again: workers or backends that came during the run count
    pids = server.pids()
    s, d = cpu_used(s0, cpu_ticks(pids)), cpu_used(d0, cpu_ticks(pg.pids()))
    n = res["requests"]
    res.update({
        "server_cpu_s": s / CLK, "db_cpu_s": d / CLK, "wall_s": t1 - t0,
        "server_us_req": s / CLK * 1e6 / n if n else None,
        "db_us_req": d / CLK * 1e6 / n if n else None,
        "rss_kb": rss_kb(pids),
    })
    return res


# ---- the run ----

def run(build, work, seconds=5.0, warmup=5.0, conns=(16, 64, 256), systems=SYSTEMS,
        tests=None, pool=8, smoke=False):
    ncpu = os.cpu_count() or 1
    tests = [t for t in TESTS if tests is None or t[0] in tests]
    pg = Postgres(work)
    res = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": seconds,
           "warmup": warmup, "conns": list(conns), "pool": pool, "ncpu": ncpu, "smoke": smoke,
           "systems": {}, "points": []}
    try:
        pg.setup()
        for system in systems:
            addr = "127.0.0.1:%d" % free_port()
            cmd = command(system, build, pg, addr, pool, ncpu)
            if cmd is None:
                log("tfb: %s: not built, skipped" % system)
                res["systems"][system] = {"status": "not built"}
                continue
            argv, env = cmd
            base = "http://" + addr
            logpath = os.path.join(work, system + ".log")
            log("tfb: %s: %s" % (system, " ".join(argv)))
            server = Server(argv, env, logpath)
            info = {"argv": argv, "status": "ok"}
            res["systems"][system] = info
            try:
                if not wait_up(server, base):
                    out = open(logpath).read().strip()
                    # a build of tfb-server without the library's loop says so
                    info["status"] = ("not built: " if "no loop mode" in out else
                                      "did not start: ") + out[-600:]
                    log("tfb: %s %s" % (system, info["status"]))
                    continue
                try:
                    bad = verify(base, pg)
                except Exception as e:  # an answer of the wrong shape
                    bad = ["an answer the checks could not read: %r" % e]
                if bad:
                    info["status"] = "fails the verifier's rules: " + "; ".join(bad[:6])
                    log("tfb: %s %s" % (system, info["status"]))
                    continue
                if warmup > 0:
                    # at the most connections, as TechEmpower's warm-up;
                    # long enough for Node's JIT (a cold node worker runs
                    # at a tenth of its speed for the first seconds)
                    for _, path in tests:
                        wrk(base + path, max(conns), warmup, ncpu)
                for test, path in tests:
                    for c in conns:
                        p = measure_point(server, pg, base, path, c, seconds, ncpu)
                        p["errors"] = p["non2xx"] + p["socket_errors"]
                        p.update({"system": system, "test": test, "conns": c})
                        res["points"].append(p)
                        log("tfb: %-15s %-9s %4d conns: %9.0f req/s  p99 %8.2f ms  "
                            "CPU/req %6.1f µs server + %6.1f µs postgres%s" % (
                                system, test, c, p["rps"], (p["p99_us"] or 0) / 1e3,
                                p["server_us_req"] or 0, p["db_us_req"] or 0,
                                "  (%d errors)" % p["errors"] if p["errors"] else ""))
                if server.proc.poll() is not None:
                    info["status"] = "exited during the run: " + open(logpath).read()[-600:]
            finally:
                server.stop()
                time.sleep(0.5)  # its PostgreSQL backends exit
    finally:
        pg.stop()
    res["versions"] = versions()
    return res


def versions():
    def deb(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True)
        return r.stdout.strip() or "?"

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError:
            return "?"

    pkg = {}
    try:
        with open(os.path.join(HERE, "node", "package-lock.json")) as f:
            pkg = json.load(f)["packages"].get("node_modules/postgres", {})
    except (OSError, ValueError, KeyError):
        pass
    return {
        "PostgreSQL server": deb("postgresql"), "wrk": deb("wrk"),
        "Go": out(["go", "version"]), "pgx": deb("golang-github-jackc-pgx-v4-dev"),
        "Node.js": out(["node", "--version"]), "postgres (npm)": pkg.get("version", "?"),
        "FastAPI": deb("python3-fastapi"), "uvicorn": deb("python3-uvicorn"),
        "asyncpg": deb("python3-asyncpg"), "uvloop": deb("python3-uvloop"),
        "libh2o-evloop": deb("libh2o-evloop0.13"),
    }


def print_summary(res):
    pts = report.tfb_points(res)
    for system, info in res["systems"].items():
        if info["status"] != "ok":
            print("%-16s %s" % (system, info["status"]))
    print("%-16s %-9s %5s %10s %9s %11s %11s %8s" % ("system", "test", "conns", "req/s", "p99 ms",
                                                    "server µs", "pg µs", "errors"))
    for (system, test, c), p in sorted(pts.items(), key=lambda kv: (
            [t for t, _ in TESTS].index(kv[0][1]), kv[0][2], SYSTEMS.index(kv[0][0]))):
        print("%-16s %-9s %5d %10.0f %9.2f %11.1f %11.1f %8d" % (
            system, test, c, p["rps"], (p["p99_us"] or 0) / 1e3, p["server_us_req"] or 0,
            p["db_us_req"] or 0, p["errors"]))
    print()
    for text, ok in report.tfb_targets(pts):
        print("%s %s" % ("MET   " if ok else "MISSED", text))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "tfb"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds a test type, unmeasured")
    ap.add_argument("--conns", default="16,64,256")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--tests", default=",".join(t for t, _ in TESTS))
    ap.add_argument("--pool", type=int, default=8,
                    help="database connections of each system, in all (split over its workers)")
    ap.add_argument("--smoke", action="store_true",
                    help="1 s a point after 1 s of warm-up, 64 connections, no report")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--command", default="bench/tfb/run.sh")
    a = ap.parse_args()
    conns = [int(c) for c in a.conns.split(",")]
    if a.smoke:
        a.seconds, a.warmup, a.no_report = 1.0, 1.0, True
        if a.conns == "16,64,256":
            conns = [64]
    work = tempfile.mkdtemp(prefix="dbscope-tfb-")
    os.chmod(work, 0o755)
    try:
        res = run(a.build, work, a.seconds, a.warmup, conns, a.systems.split(","),
                  a.tests.split(","), a.pool, a.smoke)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["command"], res["root"] = a.command, ROOT
    print_summary(res)
    if not a.no_report:
        os.makedirs(os.path.join(a.out, "bench"), exist_ok=True)
        with open(os.path.join(a.out, "bench", "tfb.json"), "w") as f:
            json.dump(res, f, indent=1)
        report.write_tfb_section(os.path.join(a.out, "benchmarks.md"), res)
        log("tfb: wrote %s/bench/tfb.json and the tfb section of %s/benchmarks.md" % (a.out, a.out))
    failed = [s for s, i in res["systems"].items()
              if i["status"] != "ok" and not i["status"].startswith("not built")]
    sys.exit(1 if failed or not res["points"] else 0)


if __name__ == "__main__":
    main()
