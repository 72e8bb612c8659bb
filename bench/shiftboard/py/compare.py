#!/usr/bin/env python3
"""shiftboard beside the Python stack it replaces, in one run (compare.sh
installs the packages, builds shiftboard and calls this):

1. a throwaway PostgreSQL (tests/pg_server.sh) with one database a system,
   and one SQLite file a system;
2. shiftboard, FastAPI (gunicorn + uvicorn workers) and Flask (gunicorn
   sync workers) each started on each database, and functional.py run
   against each: all six must pass, or nothing is loaded;
3. on each database, the three started again side by side on fresh
   databases, 4 users each registered and logged in (load.sh's set-up), a
   warm-up, then wrk with bench/shiftboard/mix.lua at each connection count,
   the systems interleaved over a few rounds (median kept): requests/s,
   p50/p99, non-2xx and socket errors, and the resident memory of all the
   system's processes (the largest sum of VmRSS sampled from /proc);
4. the results to docs/bench/shiftboard-py.json, a plot to
   docs/bench/shiftboard-py.svg, and a section of docs/benchmarks.md
   between its markers (replaced, or added before "## Targets").

    compare.py --build BUILD_DIR [--duration 10] [--rounds 3] [--conns 8,32,128]
               [--only sqlite,postgresql] [--no-report] [--logs DIR]
    compare.py --report-from docs/bench/shiftboard-py.json   (the report again)
"""
import argparse
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
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
PY = "/usr/bin/python3"
WORKERS = 2 * os.cpu_count() + 1  # gunicorn's "(2 x $num_cores) + 1"
WRK_THREADS = 4                   # load.sh's: four users
SB_THREADS = 8                    # shiftboard's default and load.sh's
BEGIN = "<!-- section: shiftboard-py (written by bench/shiftboard/py/compare.sh) -->"
END = "<!-- end section: shiftboard-py -->"

SYSTEMS = ["shiftboard", "fastapi", "flask"]
NAMES = {"shiftboard": "shiftboard (dbscope)",
         "fastapi": "FastAPI + uvicorn",
         "flask": "Flask + gunicorn"}
POOL_ENV = {"DB_POOL_SIZE": "10", "DB_MAX_OVERFLOW": "20", "DB_POOL_TIMEOUT": "30",
            "DB_POOL_RECYCLE": "3600", "DB_POOL_PRE_PING": "1"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def command(system, build, port):
    if system == "shiftboard":
        return [os.path.join(build, "examples", "shiftboard", "shiftboard"),
                "--listen", "127.0.0.1:%d" % port, "--threads", str(SB_THREADS),
                # wrk's users all come from one address, as behind a proxy
                "--slots-per-ip", "0"]
    common = [PY, "-m", "gunicorn", "-w", str(WORKERS), "-b", "127.0.0.1:%d" % port,
              "--chdir", HERE]
    if system == "fastapi":
        return common + ["-k", "uvicorn.workers.UvicornWorker", "fastapi_app:app"]
    return common + ["flask_app:app"]


class Server:
    def __init__(self, system, build, url, logdir, tag):
        self.system = system
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        env = dict(os.environ, DATABASE_URL=url, **POOL_ENV)
        self.cmd = command(system, build, self.port)
        self.log = open(os.path.join(logdir, "%s-%s.log" % (system, tag)), "w")
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.log, stderr=self.log,
                                     cwd=logdir)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s; see %s" % (system, self.proc.returncode,
                                                                   self.log.name))
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("%s did not answer /health within 60 s" % system)

    def pids(self):
        """The server's process and all its descendants, from /proc."""
        children = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
            except OSError:
                continue
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.proc.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def schedstat(self):
        """Per thread of the server's processes: (ns on a CPU, ns waiting on
        a run queue), from /proc/PID/task/TID/schedstat."""
        return schedstat_of(self.pids())

    def rss_kb(self):
        total = 0
        for p in self.pids():
            try:
                with open("/proc/%d/status" % p) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def schedstat_of(pids):
    out = {}
    for p in pids:
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tids:
            try:
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    run, wait = f.read().split()[:2]
                out[int(t)] = (int(run), int(wait))
            except (OSError, ValueError):
                pass
    return out


def sched_delta(before, after):
    """CPU and run-queue time (ns) of the threads between two snapshots;
    a thread that started in between counts from zero."""
    run = wait = 0
    for t, (r, w) in after.items():
        r0, w0 = before.get(t, (0, 0))
        run += r - r0
        wait += w - w0
    return run, wait


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def tokens(base):
    """load.sh's set-up: each wrk thread is a user, registered and logged in."""
    out = []
    for i in range(1, WRK_THREADS + 1):
        body = {"name": "load%d" % i, "password": "load-password"}
        post(base, "/api/users", body)
        out.append(post(base, "/api/login", body)["token"])
    return " ".join(out)


def wrk(base, toks, conns, duration, server=None, db_pids=None):
    env = dict(os.environ, SB_TOKENS=toks)
    cmd = ["wrk", "-t%d" % WRK_THREADS, "-c%d" % conns, "-d%ds" % duration, "--latency",
           "--timeout", "10s", "-s", os.path.join(ROOT, "bench", "shiftboard", "mix.lua"), base]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    peak = 0
    s0 = server.schedstat() if server else {}
    d0 = schedstat_of(db_pids()) if db_pids else {}
    while p.poll() is None:
        if server:
            peak = max(peak, server.rss_kb())
        time.sleep(0.5)
    s1 = server.schedstat() if server else {}
    d1 = schedstat_of(db_pids()) if db_pids else {}
    out = p.stdout.read()
    if p.returncode != 0:
        raise RuntimeError("wrk failed:\n" + out)
    r = {"conns": conns, "duration_s": duration, "rss_kb": peak}
    r["cpu_ns"], r["runq_ns"] = sched_delta(s0, s1)
    r["db_cpu_ns"] = sched_delta(d0, d1)[0] if db_pids else None
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"non-2xx: (\d+), shifts created: (\d+)", out)
    r["non_2xx"], r["created"] = (int(m.group(1)), int(m.group(2))) if m else (None, None)
    m = re.search(r"latency p50 ([\d.]+) ms, p90 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms",
                  out)
    if m:
        r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"] = (float(x) for x in m.groups())
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = dict(zip(["connect", "read", "write", "timeout"],
                                  (int(x) for x in m.groups()))) if m else {}
    n = r["requests"] or 0
    r["cpu_us_req"] = r["cpu_ns"] / n / 1000 if n else None
    r["runq_us_req"] = r["runq_ns"] / n / 1000 if n else None
    r["db_cpu_us_req"] = r["db_cpu_ns"] / n / 1000 if n and r["db_cpu_ns"] is not None else None
    r["wrk"] = out
    return r


def pg_databases(pgdir, names):
    """One database a system on the throwaway server, owned by the
    application's role (not a superuser, so row-level security applies)."""
    import psycopg2
    su = open(os.path.join(pgdir, "super_url")).read().strip()
    url = open(os.path.join(pgdir, "url")).read().strip()
    c = psycopg2.connect(su)
    c.autocommit = True
    cur = c.cursor()
    out = {}
    for n in names:
        cur.execute("DROP DATABASE IF EXISTS %s" % n)
        cur.execute("CREATE DATABASE %s OWNER dbscope" % n)
        out[n] = re.sub(r"/dbscope\?", "/%s?" % n, url)
    c.close()
    return out


def backends(pgdir, dbname):
    """A function giving the pids of the PostgreSQL backends connected to
    dbname (the system's pool), read from pg_stat_activity."""
    import psycopg2
    su = open(os.path.join(pgdir, "super_url")).read().strip()

    def pids():
        c = psycopg2.connect(su)
        try:
            cur = c.cursor()
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,))
            return [r[0] for r in cur.fetchall()]
        finally:
            c.close()
    return pids


def versions():
    def deb(pkg):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True)
        return r.stdout.strip() or "?"
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True).stdout.strip()
    cpu = "?"
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"machine": "%s, %d CPUs" % (cpu, os.cpu_count()), "dbscope": rev,
            "FastAPI": deb("python3-fastapi"), "uvicorn": deb("python3-uvicorn"),
            "Flask": deb("python3-flask"), "gunicorn": deb("gunicorn"),
            "SQLAlchemy": deb("python3-sqlalchemy"), "psycopg2": deb("python3-psycopg2"),
            "PyNaCl": deb("python3-nacl"), "libsodium": deb("libsodium23"),
            "Python": deb("python3.11"), "PostgreSQL server": deb("postgresql"),
            "SQLite": deb("libsqlite3-0"), "libmicrohttpd": deb("libmicrohttpd12"),
            "wrk": deb("wrk")}


# ---- report ----

def fmt(x, unit=""):
    if x is None:
        return "-"
    if x >= 100:
        return "{:,.0f}{}".format(x, unit)
    return "{:.1f}{}".format(x, unit) if x >= 10 else "{:.2f}{}".format(x, unit)


def plot(res, svg):
    dat = svg[:-4] + ".dat"
    blocks = []
    with open(dat, "w") as f:
        for db in ("sqlite", "postgresql"):
            for s in SYSTEMS:
                rows = [r for r in res["runs"] if r["db"] == db and r["system"] == s]
                if not rows:
                    continue
                f.write("# %s %s\n" % (db, s))
                for r in sorted(rows, key=lambda r: r["conns"]):
                    f.write("%d %f %f %f\n" % (r["conns"], r["rps"] or 0, r.get("p99_ms") or 0,
                                               r.get("cpu_us_req") or 0))
                f.write("\n\n")
                blocks.append((db, s))
    colors = {"shiftboard": "#1f77b4", "fastapi": "#2ca02c", "flask": "#d62728"}
    dash = {"sqlite": 1, "postgresql": 2}

    def plots(col):
        return "plot " + ", ".join(
            "'%s' index %d using 1:%d with linespoints lw 2 dt %d lc rgb '%s' title '%s, %s'" % (
                dat, i, col, dash[db], colors[s], NAMES[s],
                "SQLite" if db == "sqlite" else "PostgreSQL")
            for i, (db, s) in enumerate(blocks))
    script = [
        "set terminal svg size 1200,440 font 'sans,11' background '#ffffff'",
        "set output '%s'" % svg,
        "set multiplot layout 1,3 title 'shiftboard vs. the Python stack: mix.lua under wrk "
        "(solid SQLite, dashed PostgreSQL)'",
        "set logscale x 2; set logscale y; set grid",
        "set key outside bottom center horizontal font 'sans,8' maxrows 3",
        "set xlabel 'wrk connections'; set ylabel 'requests/s'",
        plots(2),
        "set ylabel 'p99 latency (ms)'",
        plots(3),
        "set ylabel 'server CPU per request (µs)'",
        plots(4),
        "unset multiplot",
    ]
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)
    os.remove(dat)


def section(res):
    L = [BEGIN, "", "## shiftboard beside the Python stack it replaces", ""]
    w = L.append
    w("Written by `%s` (%s, %.0f s); the numbers are from that one run and are kept "
      "in `docs/bench/shiftboard-py.json`. Run it again rather than editing this "
      "section." % (re.sub(r"(--logs[ =])\S+", r"\1DIR", res["command"]), res["started"],
                    res["elapsed_s"]))
    w("")
    w("The same API (`examples/shiftboard/`: routes, bodies, status codes, error JSON, "
      "bearer tokens stored as BLAKE2b hashes, argon2id passwords) written the way such "
      "services are most often written in Python, in `bench/shiftboard/py/`: "
      "SQLAlchemy 1.4's ORM, one session a request over a `QueuePool` (pool_size 10, "
      "max_overflow 20, pool_timeout 30, pool_recycle 3600, pool_pre_ping=True), "
      "psycopg2 for PostgreSQL and the standard `sqlite3` module for SQLite (with "
      "dbscope's guarantees: WAL, foreign keys, a 5 s busy timeout, and a commit on "
      "disk when acknowledged: synchronous=FULL, since the sqlite3 module has no group "
      "commit; dbscope gets the same with synchronous=NORMAL and one WAL sync shared "
      "by concurrent commits). Each unit of work is its own transaction, as in shiftboard: the token "
      "check, then the work; on PostgreSQL each transaction starts with "
      "`set_config('app.request_id', ..., true)` and `set_config('app.user_id', ..., "
      "true)` (an `after_begin` session event), which the row-level security policy "
      "on `shifts` reads. Passwords: argon2id through libsodium, as shiftboard, via "
      "PyNaCl (`nacl.pwhash.argon2id`, the \"interactive\" cost: 2 passes, 64 MiB).")
    w("")
    w("- **%s**: %s HTTP threads (its default) and `--slots-per-ip 0` (wrk's users all "
      "come from one address, as behind a reverse proxy), dbscope's pool configured like the "
      "others with `DB_POOL_SIZE=10 DB_MAX_OVERFLOW=20 DB_POOL_TIMEOUT=30 "
      "DB_POOL_RECYCLE=3600 DB_POOL_PRE_PING=1` (dbscope pings a connection only when it "
      "has been idle over 500 ms; SQLAlchemy pings at every checkout)." % (
          NAMES["shiftboard"], SB_THREADS))
    w("- **%s**: `gunicorn -k uvicorn.workers.UvicornWorker -w %d`, the production set-up "
      "uvicorn's deployment docs recommend, with gunicorn's recommended (2 × cores) + 1 "
      "workers; sync path operations (FastAPI's SQL tutorial), so each runs in the "
      "worker's thread pool (40 threads); a pool of 10 + 20 a worker." % (
          NAMES["fastapi"], WORKERS))
    w("- **%s**: `gunicorn -w %d` sync workers, (2 × cores) + 1 as gunicorn's docs "
      "recommend; one request at a time a worker, no keep-alive (the sync worker closes "
      "each connection); a pool of 10 + 20 a worker." % (NAMES["flask"], WORKERS))
    w("")
    w("Before any load, `bench/shiftboard/py/functional.py` (the same %d checks: "
      "statuses, JSON shapes, headers) passed against all three on both databases: %s." % (
          res["functional"][0]["checks"],
          ", ".join("%s on %s" % (f["system"], f["db"]) for f in res["functional"])))
    loads = [x["loadavg_before"] for r in res["runs"] for x in r["rounds"]]
    w("Load: `wrk -t%d -c N --latency --timeout 10s -s bench/shiftboard/mix.lua`, %d s a "
      "point, after a %d s warm-up of each system, with load.sh's set-up (each wrk thread "
      "is its own user, logged in first); the mix is one `POST /api/shifts` for every two "
      "`GET /api/shifts?limit=20`, every request two units of work. On each database the "
      "three systems run side by side, each on a database of its own, and are measured in "
      "turn: %d rounds, each running every point once with the order of the systems "
      "rotating, so that load from outside the run falls on all alike; the round with "
      "the median requests/s is reported (all rounds are in the JSON). wrk, the server "
      "and PostgreSQL share the machine's %d cores with whatever else runs on it: the "
      "1-minute load average before a point ranged from %.1f to %.1f during this run, "
      "so the absolute numbers are a floor and the ratios are what to read. Memory is "
      "the largest sum of VmRSS over all the server's processes (gunicorn's master and "
      "workers), sampled every 0.5 s, over all rounds of the point. CPU and run-queue "
      "wait are from the schedstat of every thread of the server's processes (and, on "
      "PostgreSQL, of the backends serving its database), over the point, divided by the "
      "requests wrk completed: CPU per request is the measure that other load on the "
      "machine disturbs least; run-queue wait is time a thread was ready to run but had "
      "no core." % (
          WRK_THREADS, res["duration_s"], res["warmup_s"], res["rounds"], os.cpu_count(),
          min(loads), max(loads)))
    w("")
    for k, v in res["versions"].items():
        w("- %s: %s" % (k, v))
    w("")
    for db, title in (("sqlite", "SQLite (WAL, one file)"), ("postgresql", "PostgreSQL (TCP, TLS, RLS)")):
        w("### %s" % title)
        w("")
        pg = db == "postgresql"
        w("| system | connections | requests/s | p50 | p99 | non-2xx | socket errors | "
          "RSS (MiB) | server CPU µs/req |%s run-queue wait µs/req | shiftboard vs. it |" % (
              " PostgreSQL CPU µs/req |" if pg else ""))
        w("|---|---|---|---|---|---|---|---|---|%s---|---|" % ("---|" if pg else ""))
        for s in SYSTEMS:
            for r in sorted((r for r in res["runs"] if r["db"] == db and r["system"] == s),
                            key=lambda r: r["conns"]):
                sb = next((x for x in res["runs"] if x["db"] == db and
                           x["system"] == "shiftboard" and x["conns"] == r["conns"]), None)
                vs = ""
                if s != "shiftboard" and sb and r["rps"] and r.get("p99_ms"):
                    vs = "%.1f× the req/s, p99 ÷%.1f" % (sb["rps"] / r["rps"],
                                                          r["p99_ms"] / sb["p99_ms"])
                    if sb.get("cpu_us_req") and r.get("cpu_us_req"):
                        vs += ", CPU ÷%.1f" % (r["cpu_us_req"] / sb["cpu_us_req"])
                w("| %s | %d | %s | %s ms | %s ms | %d | %s | %.1f | %s |%s %s | %s |" % (
                    NAMES[s], r["conns"], fmt(r["rps"]), fmt(r.get("p50_ms")),
                    fmt(r.get("p99_ms")), r["non_2xx"] or 0,
                    ", ".join("%s %d" % kv for kv in r["socket_errors"].items() if kv[1]) or "0",
                    r["rss_kb"] / 1024, fmt(r.get("cpu_us_req")),
                    (" %s |" % fmt(r.get("db_cpu_us_req"))) if pg else "",
                    fmt(r.get("runq_us_req")), vs))
        w("")
    w("![requests/s, p99 and server CPU per request against connections]"
      "(bench/shiftboard-py.svg)")
    w("")
    w("**Target: shiftboard at 10× the throughput or more, and a tenth of the p99 or "
      "less, of each peer at equal pool size.** %s" % res["verdict"])
    w("")
    w("Where the time goes in shiftboard under this load is in `bench/notes.md` "
      "(\"shiftboard beside the Python stack\").")
    w("")
    w(END)
    return "\n".join(L)


def verdict(res):
    lines, met, points = [], 0, 0
    for db in ("sqlite", "postgresql"):
        for s in ("fastapi", "flask"):
            parts = []
            for r in sorted((r for r in res["runs"] if r["db"] == db and r["system"] == s),
                            key=lambda r: r["conns"]):
                sb = next((x for x in res["runs"] if x["db"] == db and
                           x["system"] == "shiftboard" and x["conns"] == r["conns"]), None)
                if not sb or not r["rps"] or not r.get("p99_ms"):
                    continue
                tp, lat = sb["rps"] / r["rps"], r["p99_ms"] / sb["p99_ms"]
                ok = tp >= 10 and lat >= 10
                points += 1
                met += ok
                parts.append("%d connections %.1f× and p99 ÷%.1f%s" % (
                    r["conns"], tp, lat, "" if ok else " (missed)"))
            lines.append("%s on %s: %s" % (NAMES[s], "SQLite" if db == "sqlite" else
                                           "PostgreSQL", "; ".join(parts)))
    head = "**Met** at every point." if met == points else \
        "**Missed**: both halves met at %d of %d points." % (met, points)
    return head + " " + " ".join("%s." % l for l in lines)


def write_section(md_path, text):
    md = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n"
    if BEGIN in md and END in md:
        a = md.index(BEGIN)
        b = md.index(END) + len(END)
        md = md[:a] + text + md[b:]
    elif "\n## Targets" in md:
        i = md.index("\n## Targets") + 1
        md = md[:i] + text + "\n\n" + md[i:]
    else:
        md = md.rstrip("\n") + "\n\n" + text + "\n"
    with open(md_path, "w") as f:
        f.write(md)


def report(res):
    docs = os.path.join(ROOT, "docs")
    os.makedirs(os.path.join(docs, "bench"), exist_ok=True)
    res["verdict"] = verdict(res)
    with open(os.path.join(docs, "bench", "shiftboard-py.json"), "w") as f:
        json.dump(res, f, indent=1)
    plot(res, os.path.join(docs, "bench", "shiftboard-py.svg"))
    write_section(os.path.join(docs, "benchmarks.md"), section(res))


# ---- the run ----

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build")
    ap.add_argument("--report-from", metavar="JSON",
                    help="only write the report again from a run's saved results")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--conns", default="8,32,128")
    ap.add_argument("--only", default="sqlite,postgresql")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--logs", help="copy the servers' logs into this directory")
    ap.add_argument("--command", default="bench/shiftboard/py/compare.sh")
    a = ap.parse_args()
    if a.report_from:
        with open(a.report_from) as f:
            report(json.load(f))
        return 0
    if not a.build:
        ap.error("--build is required")
    conns = [int(x) for x in a.conns.split(",")]
    dbs = a.only.split(",")
    t0 = time.time()
    res = {"command": a.command, "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "duration_s": a.duration, "warmup_s": a.warmup, "rounds": a.rounds, "conns": conns,
           "workers": WORKERS, "shiftboard_threads": SB_THREADS, "wrk_threads": WRK_THREADS,
           "versions": versions(), "functional": [], "runs": []}
    work = tempfile.mkdtemp(prefix="shiftboard-py.")
    os.chmod(work, 0o755)
    pgdir = os.path.join(work, "pg")
    servers = []
    try:
        if "postgresql" in dbs:
            subprocess.run(["sh", os.path.join(ROOT, "tests", "pg_server.sh"), "start", pgdir],
                           check=True, stdout=subprocess.DEVNULL)

        def url_for(db, system, phase):
            name = "%s_%s" % (system, phase)
            if db == "sqlite":
                return "sqlite:%s/%s.db" % (work, name)
            return pg_databases(pgdir, [name])[name]

        # 1. equal work: every system passes the same calls, or nothing is loaded
        failed = []
        for db in dbs:
            for s in SYSTEMS:
                srv = Server(s, a.build, url_for(db, s, "functional"), work, db + "-functional")
                servers.append(srv)
                p = subprocess.run([PY, os.path.join(HERE, "functional.py"), srv.base],
                                   capture_output=True, text=True)
                rc = srv.stop()
                servers.remove(srv)
                sys.stdout.write("functional %s on %s: %s" % (s, db, p.stdout.splitlines()[-1]
                                                              if p.stdout else p.stderr))
                sys.stdout.write("\n")
                m = re.search(r"(\d+) checks, (\d+) failed", p.stdout)
                res["functional"].append({"system": s, "db": db, "rc": p.returncode,
                                          "checks": int(m.group(1)) if m else 0,
                                          "exit": rc})
                if p.returncode != 0:
                    failed.append((s, db, p.stdout + p.stderr))
        if failed:
            for s, db, out in failed:
                print("=== functional.py failed against %s on %s:\n%s" % (s, db, out))
            print("compare: refusing to load: the systems do not do the same work")
            return 1

        # 2. load: the three systems side by side on each database, interleaved
        # (each round runs every point once, the order of systems rotating),
        # so load from outside the run falls on all of them alike; the
        # median round by requests/s is reported, the others kept in "rounds"
        for db in dbs:
            srvs = {}
            for s in SYSTEMS:
                srvs[s] = Server(s, a.build, url_for(db, s, "load"), work, db + "-load")
                servers.append(srvs[s])
            toks = {s: tokens(srvs[s].base) for s in SYSTEMS}
            for s in SYSTEMS:
                wrk(srvs[s].base, toks[s], max(conns), a.warmup)
            runs = {}
            for rnd in range(a.rounds):
                for c in conns:
                    for i in range(len(SYSTEMS)):
                        s = SYSTEMS[(i + rnd) % len(SYSTEMS)]
                        load0 = open("/proc/loadavg").read().split()[0]
                        r = wrk(srvs[s].base, toks[s], c, a.duration, srvs[s],
                                backends(pgdir, "%s_load" % s) if db == "postgresql" else None)
                        r.update(system=s, db=db, round=rnd, loadavg_before=float(load0))
                        runs.setdefault((s, c), []).append(r)
                        print("load %-10s %-10s c=%-4d round %d: %8.0f req/s  p50 %7.2f ms  "
                              "p99 %8.2f ms  non-2xx %d  sockerr %s  rss %.0f MiB  cpu %.0f us/req"
                              "  runq %.0f us/req  db cpu %s us/req  load %s" % (
                                  s, db, c, rnd, r["rps"] or 0, r.get("p50_ms", 0),
                                  r.get("p99_ms", 0), r["non_2xx"] or 0, r["socket_errors"],
                                  r["rss_kb"] / 1024, r["cpu_us_req"] or 0,
                                  r["runq_us_req"] or 0,
                                  "%.0f" % r["db_cpu_us_req"] if r["db_cpu_us_req"] else "-",
                                  load0), flush=True)
            for (s, c), rs in runs.items():
                rs = sorted(rs, key=lambda r: r["rps"] or 0)
                med = dict(rs[len(rs) // 2])
                med["rounds"] = [{k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "non_2xx",
                                                          "rss_kb", "cpu_us_req", "runq_us_req",
                                                          "db_cpu_us_req", "loadavg_before")}
                                 for r in sorted(rs, key=lambda r: r["round"])]
                med["rss_kb"] = max(r["rss_kb"] for r in rs)
                res["runs"].append(med)
            for s in SYSTEMS:
                srvs[s].stop()
                servers.remove(srvs[s])
        res["elapsed_s"] = time.time() - t0
        if a.no_report:
            json.dump(res, sys.stdout, indent=1)
        else:
            report(res)
            print("compare: wrote docs/benchmarks.md (section), docs/bench/shiftboard-py.svg "
                  "and docs/bench/shiftboard-py.json")
        return 0
    finally:
        for srv in servers:
            srv.stop()
        if a.logs:
            os.makedirs(a.logs, exist_ok=True)
            for f in os.listdir(work):
                if f.endswith(".log"):
                    shutil.copy(os.path.join(work, f), a.logs)
        if os.path.isdir(pgdir):
            subprocess.run(["sh", os.path.join(ROOT, "tests", "pg_server.sh"), "stop", pgdir],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
