"""Writes docs/benchmarks.md and docs/bench/*.svg from one harness run."""
import json
import os
import re
import subprocess
import sys

NAMES = {
    "dbscope": "dbscope", "dbscope-noval": "dbscope, validation off",
    "dbscope-fifo": "dbscope, strict order (barge_limit_us = 0)",
    "lock": "floor: pthread mutex lock + unlock",
    "dbscope-rollback": "dbscope, reset: rollback only", "direct": "direct (no pool)",
    "none": "connect per request (dbscope NONE)",
    "dbscope-blind": "dbscope, histograms and leak reports off", "zdb": "libzdb 3.1", "hikari": "HikariCP 2.7.9",
    "sqlalchemy": "SQLAlchemy 1.4 QueuePool", "bouncer": "PgBouncer 1.18 (txn) + libpq",
    "bouncer-reset": "PgBouncer 1.18 (txn, DISCARD ALL after each transaction) + libpq",
}
ORDER = ["dbscope", "dbscope-fifo", "dbscope-noval", "dbscope-rollback", "dbscope-blind", "lock",
         "direct", "none", "zdb", "hikari", "sqlalchemy", "bouncer", "bouncer-reset"]


EXTRA_NAMES = {"sqlite": "the SQLite unit of work, whose 2-thread point swings most between rounds"}


def fmt(x):
    if x is None:
        return "-"
    if x >= 100000:
        return "{:,.0f}".format(x)
    if x >= 100:
        return "{:,.0f}".format(x)
    return "{:.1f}".format(x) if x >= 10 else "{:.2f}".format(x)


def ratio(a, b):
    # a point that counted no unit (stalled under load) has no ratio
    if not a or not b or not a["ops_s"] or not b["ops_s"]:
        return None
    return a["ops_s"] / b["ops_s"]


def table(med, scenario, matrix_keys, peers):
    # server CPU a unit, where the harness measured it (PostgreSQL, MariaDB)
    cpu = any("server_us" in r for k, r in med.items() if k[0] == scenario)
    lines = ["| system | threads | pool | ops/s | p50 µs | p99 µs |%s check | dbscope ÷ it |" % (
                 " server CPU µs/unit |" if cpu else ""),
             "|---|---|---|---|---|---|%s---|---|" % ("---|" if cpu else "")]
    for system in ORDER:
        for (t, p) in matrix_keys:
            r = med.get((scenario, system, t, p))
            if not r:
                continue
            d = med.get((scenario, "dbscope", t, p))
            rr = ratio(d, r) if system != "dbscope" else None
            lines.append("| %s | %d | %d | %s | %s | %s |%s %s | %s |" % (
                NAMES[system], t, p, fmt(r["ops_s"]), fmt(r["p50_us"]), fmt(r["p99_us"]),
                (" %s |" % fmt(r.get("server_us"))) if cpu else "",
                r["check"] + ("" if not r["errors"] else " (%d errors)" % r["errors"]),
                "%.2fx" % rr if rr else ""))
    return "\n".join(lines)


def plot(outdir, med, scenario, pool, title, name):
    """Throughput and p99 latency against threads, one line a system."""
    os.makedirs(os.path.join(outdir, "bench"), exist_ok=True)
    data = os.path.join(outdir, "bench", name + ".dat")
    systems = [s for s in ORDER if any(k[0] == scenario and k[1] == s and
                                       (k[3] == pool or s in ("direct",)) for k in med)]
    blocks = []
    with open(data, "w") as f:
        for s in systems:
            rows = sorted((k[2], r) for k, r in med.items()
                          if k[0] == scenario and k[1] == s and (k[3] == pool or s == "direct"))
            if not rows:
                continue
            f.write("# %s\n" % s)
            for t, r in rows:
                f.write("%d %f %f\n" % (t, r["ops_s"], r["p99_us"]))
            f.write("\n\n")
            blocks.append(s)
    if not blocks:
        return None
    svg = os.path.join(outdir, "bench", name + ".svg")
    script = [
        "set terminal svg size 900,380 font 'sans,11' background '#ffffff'",
        "set output '%s'" % svg,
        "set multiplot layout 1,2 title '%s'" % title,
        "set logscale x 2; set logscale y; set grid; set key outside bottom center horizontal font 'sans,9'",
        "set xlabel 'threads'; set ylabel 'ops/s'",
        "plot " + ", ".join("'%s' index %d using 1:2 with linespoints lw 2 title '%s'" % (
            data, i, NAMES[s]) for i, s in enumerate(blocks)),
        "set ylabel 'p99 latency (µs)'",
        "plot " + ", ".join("'%s' index %d using 1:3 with linespoints lw 2 title '%s'" % (
            data, i, NAMES[s]) for i, s in enumerate(blocks)),
        "unset multiplot",
    ]
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=False,
                   capture_output=True)
    os.remove(data)
    return "bench/" + name + ".svg" if os.path.exists(svg) else None


def portable(text, root):
    """A command or argument list as the report shows it: paths inside the
    checkout relative to it (the commands run from the checkout), the run's
    scratch directory as $WORK, so the report names no path of the machine
    it ran on."""
    text = re.sub(r"/(?:[^\s:'\"/]+/)*dbscope-bench-[A-Za-z0-9_]+", "$WORK", text)
    if root:
        text = re.sub(re.escape(root.rstrip("/")) + r"/", "", text)
    return text


def checkout_of(meta, commands):
    """Where the checkout was when the results were taken: kept in the
    results since it is recorded, else read off an adapter's path."""
    if meta.get("root"):
        return meta["root"]
    for cmd in commands.values():
        m = re.search(r"(/[^\s:'\"]*?)/bench/peers/", " ".join(cmd))
        if m:
            return m.group(1)
    return None


def save(outdir, med, commands, rec, mem, ver, meta):
    """Keeps the run's results beside the report, so that the report can be
    written again from the same numbers (python3 bench/report.py)."""
    os.makedirs(os.path.join(outdir, "bench"), exist_ok=True)
    with open(os.path.join(outdir, "bench", "results.json"), "w") as f:
        json.dump({"med": [[list(k), v] for k, v in sorted(med.items())],
                   "commands": [[list(k), v] for k, v in sorted(commands.items())],
                   "rec": rec, "mem": mem, "ver": ver, "meta": meta}, f, indent=1)


def write(outdir, med, commands, rec, mem, ver, meta):
    save(outdir, med, commands, rec, mem, ver, meta)
    root = checkout_of(meta, commands)
    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("Generated by `bench/run` (%s); every number below is from that one run, "
      "which took %.0f s. Do not edit by hand: run it again (or, after editing "
      "`bench/notes.md`, `python3 bench/report.py` writes it again from the same "
      "results, kept in `docs/bench/results.json`)." % (portable(meta["argv"], root) or "no options",
                                                                  meta["elapsed_s"]))
    w("")
    w("## Machine and versions")
    w("")
    for k, v in ver.items():
        w("- %s: %s" % (k, v))
    w("")
    w("## Method")
    w("")
    w("Every system runs the same loop in its own adapter (`bench/peers/`): a thread "
      "acquires a connection, does the scenario's work, releases it, and records the "
      "latency of the whole and the wait to acquire. Systems are interleaved: each round "
      "runs every system once, over the whole matrix of threads and pool sizes, each round "
      "starting with the next system in turn "
      "(%d rounds%s, %.1f s measured per point after %.1f s of warm-up; HikariCP also gets "
      "an unmeasured pass first, for the JIT); the median round of each point is reported. "
      "Each unit reads `v` for a random key and checks it against the known value (3 × key); "
      "the PostgreSQL unit also adds 1 to a counter, and the adapter checks afterwards that "
      "the table gained at least one increment per unit it counted. `check` says whether "
      "that held: a run that skipped work cannot pass for a fast one. The load generator "
      "and the database share this 2-core machine, so absolute numbers are noisy; the "
      "interleaving makes the ratios fair." % (
          meta["rounds"],
          "".join(", %d for %s" % (meta["rounds"] + x, EXTRA_NAMES.get(sc, sc))
                  for sc, x in sorted(meta.get("extra_rounds", {}).items())),
          meta["seconds"], meta["warmup"]))
    w("")
    w("Connections: SQLite is a WAL file. PostgreSQL is a throwaway server on a Unix socket "
      "for dbscope, direct, SQLAlchemy and PgBouncer; over TCP on loopback for HikariCP "
      "(the JDBC driver has no Unix sockets) and libzdb (its URL takes no socket port). "
      "libzdb returns NULL when its pool is full; its adapter retries with `sched_yield()`, "
      "which is what callers of it must write themselves. MariaDB is a throwaway server "
      "(`tests/mysql_server.sh`) reached over TCP on loopback by every system, without TLS.")
    w("")
    w("Server CPU µs/unit (PostgreSQL and MariaDB): the CPU time of every process of the "
      "PostgreSQL server, or of every thread of `mariadbd` (`/proc/PID/schedstat`, "
      "`/proc/PID/task/TID/schedstat`, sampled every 50 ms and interpolated) over the point's "
      "measured window, divided by the units it counted. Client and server share this "
      "machine's CPU; this is the server's share, what a real deployment pays on the "
      "database. Processes and threads that exit within the window are undercounted "
      "(connect per request); PgBouncer's own CPU is not in it.")
    w("")
    w("Commands (one per adapter), as run from the checkout; `$WORK` is the run's scratch "
      "directory (the SQLite file, the servers' sockets), which bench/run makes afresh:")
    w("")
    w("```")
    for (scenario, system), cmd in sorted(commands.items()):
        line = portable(" ".join(c if " " not in c else "'%s'" % c for c in cmd), root)
        # the throwaway server's password is random, but still not for print
        line = re.sub(r"((?:postgresql(?:\+psycopg2)?|mariadb|mysql)://dbscope:)[^@]+@", r"\1***@",
                      line)
        line = re.sub(r"(password=)[^&\s]+", r"\1***", line)
        line = re.sub(r"(--password )\S+", r"\1***", line)
        w(line)
    w("```")
    w("")

    sections = [
        ("cycle", "1. Cycle: acquire + release, no statement (SQLite file)",
         [(t, p) for p in (4, 16) for t in (1, 2, 8, 32)],
         [("cycle", 4, "Cycle, pool of 4", "cycle-pool4"), ("cycle", 16, "Cycle, pool of 16", "cycle-pool16")]),
        ("sqlite", "2. Unit of work on SQLite: BEGIN; SELECT by key; COMMIT",
         [(1, 8), (2, 8), (8, 8)], [("sqlite", 8, "SQLite unit of work, pool of 8", "sqlite")]),
        ("pg", "3. Unit of work on PostgreSQL: BEGIN; SELECT; UPDATE; COMMIT",
         # direct's own points, one connection a thread; (8, 8) is already a pool point
         [(t, p) for p in (4, 8) for t in (1, 8, 32)] + [(1, 1), (4, 4), (32, 32)],
         [("pg", 4, "PostgreSQL unit of work, pool of 4", "pg-pool4"),
          ("pg", 8, "PostgreSQL unit of work, pool of 8", "pg-pool8")]),
    ]
    for scenario, title, keys, plots in sections:
        w("## " + title)
        w("")
        for sc, pool, ptitle, name in plots:
            svg = plot(outdir, med, sc, pool, ptitle, name)
            if svg:
                w("![%s](%s)" % (ptitle, svg))
                w("")
        w(table(med, scenario, keys, None))
        w("")

    mysql_section(w, outdir, med)
    w("## 4. Fairness: 32 threads on a pool of 4, SQLite unit of work")
    w("")
    w("| system | ops/s | least ÷ most units a thread | acquire wait p99 µs | max µs |")
    w("|---|---|---|---|---|")
    for s in ORDER:
        r = med.get(("fair", s, 32, 4))
        if r:
            w("| %s | %s | %.2f | %s | %s |" % (NAMES[s], fmt(r["ops_s"]),
                                                r["min_thread"] / max(r["max_thread"], 1),
                                                fmt(r["wait_p99_us"]), fmt(r["wait_max_us"])))
    w("")
    rule_section(w, med)
    on, off = med.get(("observe", "dbscope", 1, 4)), med.get(("observe", "dbscope-blind", 1, 4))
    if on and off:
        w("## What observability costs: one thread, cycle, pool of 4")
        w("")
        w("dbscope as configured everywhere else (wait and use histograms on, leak reports "
          "at 60 s) against the same pool with `metrics = 0` and no leak threshold, "
          "interleaved in the same rounds.")
        w("")
        w("| configuration | cycles/s | p50 µs | p99 µs |")
        w("|---|---|---|---|")
        for r, name in ((on, "observability on"), (off, "observability off")):
            w("| %s | %s | %s | %s |" % (name, fmt(r["ops_s"]), fmt(r["p50_us"]), fmt(r["p99_us"])))
        w("")
        w("Cost: %.1f%% of the cycle's throughput (target: at most 5%%)." % (
            100.0 * (1 - on["ops_s"] / off["ops_s"])))
        w("")
    w("## 5. Recovery: PostgreSQL restarted under load (8 threads, pool of 4)")
    w("")
    w("`pg_ctl stop -m fast`, one second down, `pg_ctl start`; the clock starts when the "
      "server accepts connections again. Full throughput = 90% of the median before the stop, "
      "in 100 ms buckets.")
    w("")
    w("| system | before (units/s) | first unit done after | back to full after | failed units |")
    w("|---|---|---|---|---|")
    for s in ORDER:
        r = rec.get(s)
        if r:
            w("| %s | %s | %s | %s | %d |" % (
                NAMES[s], fmt(r["baseline_per_s"]),
                "%.1f s" % r["first_s"] if r.get("first_s") is not None else "never",
                "%.1f s" % r["recovered_s"] if r["recovered_s"] is not None else "not within the run",
                r["errors"]))
    w("")
    w("Failed units: every adapter backs off 1 ms after a failure and tries again; a pool "
      "that fails fast while the database is down (dbscope's circuit breaker, SQLAlchemy) "
      "shows many, a pool that makes callers wait (HikariCP, up to its 30 s connection "
      "timeout) shows few but holds its callers instead. New server processes start cold "
      "(catalog caches, statements parsed again), so the last 10% of throughput takes a "
      "while for every pool that reconnects.")
    w("")
    w("## Memory")
    w("")
    w("| system | peak RSS of the adapter process (KiB), PostgreSQL 8 threads pool 8 |")
    w("|---|---|")
    for s in ORDER:
        r = med.get(("pg", s, 8, 8))
        if r:
            w("| %s | {:,} |".format(r["rss_kb"]) % NAMES[s])
    w("")
    for m in mem:
        w("- %s: dbscope's own heap a pooled connection: **%s bytes** (a pool holding %d open "
          "connections, minus as many raw connections: %s vs %s bytes each)" % (
              m["backend"], "{:,}".format(m["dbscope_bytes_per_conn"]), m["connections"],
              "{:,}".format(m["pooled_bytes_per_conn"]), "{:,}".format(m["raw_bytes_per_conn"])))
    w("")
    fresh = {"tfb": tfb_section(meta["tfb"])} if meta.get("tfb") else {}
    kept = kept_sections(os.path.join(outdir, "benchmarks.md"), skip=fresh)
    if kept:
        w(kept)
        w("")
    for text in fresh.values():
        w(text)
        w("")
    w(targets(med, rec, meta.get("sqlite_sync", {}), root))
    with open(os.path.join(outdir, "benchmarks.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def rule_section(w, med):
    """The order rule's effect: dbscope (barge_limit_us at its default)
    against the same pool in strict order, at every point both ran."""
    rows = []
    for sc in ("cycle", "sqlite", "pg", "fair"):
        for (sc2, sy, t, p) in sorted(med, key=lambda k: (k[3], k[2])):
            if sc2 == sc and sy == "dbscope-fifo":
                d = med.get((sc, "dbscope", t, p))
                f = med[(sc2, sy, t, p)]
                if d:
                    rows.append((sc, t, p, d, f))
    if not rows:
        return
    w("## The order rule: bounded barging against strict order")
    w("")
    w("`dbscope` as configured everywhere else (`barge_limit_us` = 2000, its default) against "
      "the same pool with `barge_limit_us` = 0 (strict first come, first served), interleaved "
      "in the same rounds. The rule only acts while threads wait, so where threads do not "
      "outnumber connections, or a unit of work holds its connection longer than the budget "
      "(every PostgreSQL point), both run the same code and the ratio shows this machine's "
      "noise between rounds. docs/pool.md states the rule.")
    w("")
    w("| scenario | threads | pool | dbscope ops/s | strict order ops/s | ratio | least ÷ most, dbscope / strict | longest wait ms, dbscope / strict |")
    w("|---|---|---|---|---|---|---|---|")
    for sc, t, p, d, f in rows:
        w("| %s | %d | %d | %s | %s | %.2fx | %.2f / %.2f | %.1f / %.1f |" % (
            sc, t, p, fmt(d["ops_s"]), fmt(f["ops_s"]), d["ops_s"] / f["ops_s"],
            d["min_thread"] / max(d["max_thread"], 1), f["min_thread"] / max(f["max_thread"], 1),
            d["wait_max_us"] / 1000, f["wait_max_us"] / 1000))
    w("")


MYSQL_POINTS = [(t, p) for p in (4, 8) for t in (1, 8, 32)]
# (system, what it is compared with, goal or None, direct at the same
# connection count rather than at the same point)
MYSQL_RATIOS = [("dbscope", "direct", 0.9, True), ("dbscope", "zdb", 3.0, False),
                ("dbscope", "hikari", None, False), ("dbscope-rollback", "direct", None, True)]


def mysql_ratios(med, system, peer, same_conns):
    """[(threads, pool, ratio)] over the MariaDB points both have."""
    out = []
    for t, p in MYSQL_POINTS:
        c = min(t, p)
        other = med.get(("mysql", peer, c, c) if same_conns else ("mysql", peer, t, p))
        r = ratio(med.get(("mysql", system, t, p)), other)
        if r:
            out.append((t, p, r))
    return out


def mysql_section(w, outdir, med):
    """The pg unit on MariaDB; written only when the run measured it."""
    if not any(k[0] == "mysql" for k in med):
        return
    w("## 3b. Unit of work on MariaDB: START TRANSACTION; SELECT; UPDATE; COMMIT")
    w("")
    w("The PostgreSQL unit of work, on a throwaway MariaDB server: dbscope through a "
      "`mariadb://` URL (with its default reset, and with `DBS_RESET_ROLLBACK`); direct is "
      "a libmariadb connection per thread whose two statements are prepared on the server "
      "once (START TRANSACTION, two executions, COMMIT: no pool, no reset); libzdb 3.1 "
      "through its `mysql://` URL; HikariCP with Debian's MariaDB JDBC driver "
      "(`setAutoCommit(false)`, a PreparedStatement each, commit; the driver's defaults "
      "otherwise). Direct is compared at the same number of connections (min(threads, "
      "pool)), the others at the same point.")
    w("")
    for pool in (4, 8):
        title = "MariaDB unit of work, pool of %d" % pool
        svg = plot(outdir, med, "mysql", pool, title, "mysql-pool%d" % pool)
        if svg:
            w("![%s](%s)" % (title, svg))
            w("")
    w(table(med, "mysql", MYSQL_POINTS + [(1, 1), (4, 4), (32, 32)], None))
    w("")
    w("| ratio | goal | " + " | ".join("%d/%d" % tp for tp in MYSQL_POINTS) + " | goal met |")
    w("|---|---|" + "---|" * len(MYSQL_POINTS) + "---|")
    for system, peer, goal, same in MYSQL_RATIOS:
        rs = {(t, p): r for t, p, r in mysql_ratios(med, system, peer, same)}
        if not rs:
            continue
        cells = ["%.2fx" % rs[tp] if tp in rs else "-" for tp in MYSQL_POINTS]
        met = "" if goal is None else ("**met**" if all(r >= goal for r in rs.values())
                                       else "**not met**")
        w("| %s ÷ %s%s | %s | %s | %s |" % (
            NAMES[system], NAMES[peer], ", same connections" if same else "",
            "≥ %gx" % goal if goal else "-", " | ".join(cells), met))
    w("")
    w("Columns are threads/pool. The round trips each system sends a unit are in "
      "[the notes](#notes-on-the-results); what a dbscope session and its reset cost on "
      "MariaDB, in [docs/mariadb.md](mariadb.md).")
    w("")


def kept_sections(path, skip=()):
    """Sections other runners write into benchmarks.md between
    "<!-- section: NAME ... -->" and "<!-- end section: NAME -->" (such as
    bench/shiftboard/py/compare.sh's): kept as they are, since this run does
    not measure them (except those named in skip, which it wrote afresh)."""
    try:
        md = open(path).read()
    except OSError:
        return ""
    return "\n\n".join(m.group(0) for m in re.finditer(
        r"<!-- section: (\S+).*?-->.*?<!-- end section: \1 -->", md, re.S)
        if m.group(1) not in skip)


def targets(med, rec, sync=None, root=None):
    L = ["## Targets", ""]
    w = L.append

    def get(sc, s, t, p):
        return med.get((sc, s, t, p))

    def verdict(ok):
        return "**met**" if ok else "**missed**"

    rows = []
    for p in (4, 16):
        for t in (1, 2, 8, 32):
            d, z, h = get("cycle", "dbscope", t, p), get("cycle", "zdb", t, p), get("cycle", "hikari", t, p)
            if d and z and h:
                rows.append((t, p, ratio(d, z), ratio(d, h)))
    ok_z = all(r[2] >= 10 for r in rows)
    ok_h = all(r[3] >= 1 for r in rows)
    w("- Cycle ≥ 10× libzdb at every point: %s (%s)." % (verdict(ok_z), ", ".join(
        "%d/%d: %.1f×" % (t, p, rz) for t, p, rz, _ in rows)))
    w("- Cycle ≥ 1.0× HikariCP at every point: %s (%s)." % (verdict(ok_h), ", ".join(
        "%d/%d: %.2f×" % (t, p, rh) for t, p, _, rh in rows)))
    fl = [(t, p, ratio(get("cycle", "dbscope", t, p), get("cycle", "lock", t, p))) for t, p in ((1, 4), (1, 16))]
    fl = [x for x in fl if x[2]]
    if fl:
        w("- Uncontended cycle within 2× of an uncontended pthread mutex lock + unlock through the "
          "same loop (the floor row): %s (dbscope ÷ floor %s; 0.50 is 2×)." % (
              verdict(all(r >= 0.5 for *_, r in fl)), ", ".join("%d/%d: %.2f" % x for x in fl)))
    sq = [(t, ratio(get("sqlite", "dbscope", t, 8), get("sqlite", "direct", t, 8))) for t in (1, 2, 8)]
    sq = [(t, r) for t, r in sq if r]
    w("- SQLite unit of work ≥ 0.98× direct: %s (%s)." % (verdict(all(r >= 0.98 for _, r in sq)), ", ".join(
        "%d threads: %.2f×" % (t, r) for t, r in sq)))
    if sync and "8" in sync and sync["8"].get("default") and sync["8"].get("normal"):
        r8 = sync["8"]["normal"] / sync["8"]["default"]
        one = sync.get("1", {})
        w("- SQLite one-row inserts from 8 threads, durable by default (the shared WAL sync) "
          "≥ 0.7× `?synchronous=normal`: %s (%.2f×: %.1f µs against %.1f µs a unit%s; `%s`)." % (
              verdict(r8 >= 0.7), r8, sync["8"]["default"], sync["8"]["normal"],
              "; one thread: %.1f µs against %.1f µs, one sync per commit as before" % (
                  one["default"], one["normal"]) if one.get("default") and one.get("normal") else "",
              portable(sync["8"]["command"], root)))
    pg32 = ratio(get("pg", "dbscope", 32, 4), get("pg", "direct", 4, 4))
    if pg32:
        w("- PostgreSQL, 32 threads on 4 connections, better than 0.71× of 4 direct connections: "
          "%s (%.2f×)." % (verdict(pg32 > 0.71), pg32))
    pgd = []
    for t, p in ((1, 4), (8, 4), (32, 4), (1, 8), (8, 8), (32, 8)):
        c = min(t, p)
        r = ratio(get("pg", "dbscope", t, p), get("pg", "direct", c, c))
        if r:
            pgd.append((t, p, r))
    w("- PostgreSQL unit of work ≥ 0.9× direct at the same connection count: %s (%s)." % (
        verdict(all(r >= 0.9 for *_, r in pgd)), ", ".join("%d threads/%d conns: %.2f×" % x for x in pgd)))
    pts = [(t, p) for p in (4, 8) for t in (1, 8, 32)]
    fr = [(t, p, ratio(get("pg", "dbscope", t, p), get("pg", "dbscope-rollback", t, p))) for t, p in pts]
    fr = [x for x in fr if x[2]]
    if fr:
        w("- PostgreSQL, the full reset ≥ 0.85× the rollback-only reset: %s (%s)." % (
            verdict(all(r >= 0.85 for *_, r in fr)), ", ".join("%d/%d: %.2f×" % x for x in fr)))
    cu = []
    for t, p in pts:
        d, rb = get("pg", "dbscope", t, p), get("pg", "dbscope-rollback", t, p)
        if d and rb and d.get("server_us") and rb.get("server_us"):
            cu.append((t, p, d["server_us"] / rb["server_us"] - 1))
    if cu:
        w("- PostgreSQL, the reset adds ≤ 25%% to the unit's server CPU (dbscope's server CPU a "
          "unit ÷ the rollback-only reset's): %s (%s)." % (
              verdict(all(x <= 0.25 for *_, x in cu)),
              ", ".join("%d/%d: +%.0f%%" % (t, p, 100 * x) for t, p, x in cu)))
    hk = [(t, p, ratio(get("pg", "dbscope", t, p), get("pg", "hikari", t, p))) for t, p in pts]
    hk = [x for x in hk if x[2]]
    if hk:
        w("- PostgreSQL unit of work ≥ 1.0× HikariCP at every point: %s (%s)." % (
            verdict(all(r >= 1.0 for *_, r in hk)), ", ".join("%d/%d: %.2f×" % x for x in hk)))
    for peer, want in (("direct", 0.9), ("zdb", 3.0)):
        rs = mysql_ratios(med, "dbscope", peer, peer == "direct")
        if rs:
            w("- MariaDB unit of work ≥ %g× %s%s: %s (%s)." % (
                want, NAMES[peer], " at the same connection count" if peer == "direct" else "",
                verdict(all(r >= want for *_, r in rs)),
                ", ".join("%d/%d: %.2f×" % x for x in rs)))
    unreachable = False
    for peer, want in (("bouncer", 1.5), ("bouncer-reset", 2.0), ("sqlalchemy", 10), ("none", 20)):
        rs = []
        for (sc, s, t, p), r in med.items():
            if sc == "pg" and s == peer:
                d = get("pg", "dbscope", t, p)
                if d:
                    # the most any client could show here: direct libpq on
                    # as many connections, against the same peer point
                    c = min(t, p)
                    rs.append((t, p, ratio(d, r), ratio(get("pg", "direct", c, c), r)))
        rs.sort()
        parts = []
        for t, p, r, ceiling in rs:
            if r is None:
                parts.append("%d/%d: no units counted" % (t, p))
                continue
            s = "%d/%d: %.1f×" % (t, p, r)
            if ceiling and ceiling < want:
                s += " (ceiling %.1f×)" % ceiling
                unreachable = True
            parts.append(s)
        w("- PostgreSQL unit of work ≥ %g× %s: %s (%s)." % (want, NAMES[peer], verdict(
            rs and all(r is not None and r >= want for _, _, r, _ in rs)), ", ".join(parts)))
    if unreachable:
        w("  A ceiling is direct libpq on the same number of connections divided by the peer "
          "at that point: what any client of this server could show there, pool or not. Where "
          "it is below the target, the target cannot be met on this machine by any client.")
    on, off = get("observe", "dbscope", 1, 4), get("observe", "dbscope-blind", 1, 4)
    if on and off:
        cost = 1 - on["ops_s"] / off["ops_s"]
        w("- Observability adds at most 5%% to an uncontended cycle: %s (%.1f%%)." % (
            verdict(cost <= 0.05), 100 * cost))
    f = get("fair", "dbscope", 32, 4)
    if f:
        fr = f["min_thread"] / max(f["max_thread"], 1)
        w("- Fairness, 32 threads on 4: least ÷ most ≥ 0.9 and the longest acquire wait ≤ 5 ms: "
          "%s (%.2f; longest wait %.1f ms)." % (
              verdict(fr >= 0.9 and f["wait_max_us"] <= 5000), fr, f["wait_max_us"] / 1000))
    w("")
    w("Where a target is missed, the reason and what would change it are in "
      "[the notes below](#notes-on-the-results).")
    w("")
    w("## Notes on the results")
    w("")
    w(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "notes.md")).read().strip())
    return "\n".join(L)


# ---- the TechEmpower test types (bench/tfb/tfb.py) ----

TFB_BEGIN = "<!-- section: tfb (written by bench/tfb/run.sh and bench/run's tfb scenario) -->"
TFB_END = "<!-- end section: tfb -->"
TFB_TESTS = [("json", "/json"), ("plaintext", "/plaintext"), ("db", "/db"),
             ("queries", "/queries?queries=20"), ("fortunes", "/fortunes"),
             ("updates", "/updates?queries=20")]
TFB_SYSTEMS = ["dbscope-loop", "dbscope-threads", "dbscope-nopipe", "go", "node", "python"]
TFB_NAMES = {
    "dbscope-loop": "dbscope, loop mode",
    "dbscope-threads": "dbscope, threads mode",
    "dbscope-nopipe": "dbscope, loop mode, no pipelining",  # --pipeline 0
    "go": "Go net/http + pgx v4 pgxpool",
    "node": "Node.js http (cluster) + postgres",
    "python": "FastAPI + asyncpg (uvicorn)",
}


def tfb_points(res):
    return {(p["system"], p["test"], p["conns"]): p for p in res["points"]}


def tfb_targets(points):
    """The targets of the tfb scenario, from whatever was measured:
    [(text, met)]. A point with errors counts as not measured."""
    def rps(system, test, conns):
        p = points.get((system, test, conns))
        return p["rps"] if p and p["rps"] and not p["errors"] else None

    out = []
    conns = sorted({c for (_, _, c) in points})
    top = max(conns) if conns else None
    a, b = rps("dbscope-loop", "queries", top), rps("dbscope-threads", "queries", top)
    if a and b:
        out.append(("loop mode ≥ 1.3× threads mode on /queries?queries=20 at %d connections "
                    "(%.2f×)" % (top, a / b), a / b >= 1.3))
    parts, ok = [], True
    for c in conns:
        a, b = rps("dbscope-loop", "queries", c), rps("dbscope-nopipe", "queries", c)
        if a and b:
            parts.append("%d connections: %.2f×" % (c, a / b))
            ok = ok and a / b >= 3
    if parts:
        out.append(("pipelined /queries?queries=20 ≥ 3× the same without pipelining (%s)" %
                    ", ".join(parts), ok))
    lo, hi = (conns[0], conns[-1]) if len(conns) > 1 else (None, None)

    def per_conn(system):
        a, b = points.get((system, "db", lo)), points.get((system, "db", hi))
        return (b["rss_kb"] - a["rss_kb"]) / (hi - lo) if a and b else None

    ml, mt = per_conn("dbscope-loop"), per_conn("dbscope-threads")
    if ml is not None and mt is not None:
        out.append(("loop mode's memory a connection ≤ threads mode's (server RSS growth from %d "
                    "to %d connections on /db, a connection: %.1f KiB against %.1f KiB)" % (
                        lo, hi, ml, mt), ml <= mt))
    for peer in ("go", "node", "python"):
        behind, n = [], 0
        for test, _ in TFB_TESTS:
            for c in conns:
                a, b = rps("dbscope-loop", test, c), rps(peer, test, c)
                if a and b:
                    n += 1
                    if a < b:
                        behind.append("%s at %d: %.2f×" % (test, c, a / b))
        if n:
            out.append(("dbscope's loop mode ahead of %s at every test type and connection count "
                        "(%s)" % (TFB_NAMES[peer], "%d points" % n if not behind else
                                  "behind at " + ", ".join(behind)), not behind))
    return out


def tfb_section(res):
    """The tfb section of benchmarks.md, from one run's results."""
    pts = tfb_points(res)
    L = [TFB_BEGIN, "", "## The TechEmpower test types: dbscope's tfb-server beside Go, Node.js "
         "and Python", ""]
    w = L.append
    w("Written by `%s` (%s; %g s measured a point after %g s of warm-up a test type). "
      "Every system runs on this machine's %d cores beside PostgreSQL and wrk, against one "
      "throwaway PostgreSQL (`tests/pg_server.sh`) over TCP on loopback without TLS, with the "
      "tables `bench/tfb/create-postgres.sql` makes as TechEmpower's toolset does, and %d "
      "database connections in all for each system (split over its worker processes). Before "
      "it is measured, each system's routes are checked against the verifier's rules (status, "
      "Server and Date headers, Content-Type, the query count clamped to 1..500, the fortunes "
      "sorted and escaped with the added one); a system that fails is not measured." % (
          res.get("command", "bench/tfb/run.sh"), res["started"], res["seconds"], res["warmup"],
          res["ncpu"], res["pool"]))
    w("")
    w("- dbscope: `examples/tfb/tfb-server` with `--mode loop --threads %d` (one event loop a "
      "core, pipelined), `--mode threads` (the blocking API), and `--mode loop` without "
      "pipelining (`--pipeline 0`: one SELECT a round trip); its pool from `DB_POOL_SIZE`." % res["ncpu"])
    w("- Go (`bench/tfb/go/`): net/http and pgx v4's pgxpool from Debian's packages, built "
      "offline; statements prepared on each new connection, `/queries` one query after the "
      "other, `/updates` a pgx.Batch in a transaction, as TechEmpower's go-std pgx entry.")
    w("- Node.js (`bench/tfb/node/`): node:http, one worker a core (node:cluster), the npm "
      "`postgres` client (pipelined, prepared), `/queries` all reads at once, `/updates` one "
      "`UPDATE ... FROM (VALUES ...)`, as TechEmpower's nodejs postgres entry.")
    w("- Python (`bench/tfb/python/`): FastAPI on uvicorn (uvloop, httptools), one worker a "
      "core, an asyncpg pool a worker, `executemany` for the updates and Jinja2 for the "
      "fortunes, as TechEmpower's fastapi entry.")
    w("")
    w("Load: `wrk -t min(cores, connections) -c N -d S --latency URL`, no HTTP pipelining "
      "(TechEmpower pipelines 16 deep on plaintext). CPU µs/request: utime + stime from "
      "`/proc/PID/stat` of the server's whole process tree (every worker and thread), and of "
      "its PostgreSQL backends (the role's client backends; not autovacuum, the checkpointer "
      "or the WAL writer), read before and after the point, divided by the requests wrk "
      "counted. RSS: the server's process tree after the point.")
    w("")
    w("Each test type is first run unmeasured for %g s at the most connections, as "
      "TechEmpower's warm-up (a cold Node.js worker runs at a tenth of its speed for the "
      "first seconds on this loaded machine)." % res["warmup"])
    w("")
    bad = [(s, i["status"]) for s, i in res["systems"].items() if i["status"] != "ok"]
    for s, status in bad:
        w("- **%s: %s.**" % (TFB_NAMES.get(s, s), status.rstrip(".")))
    if bad:
        w("")
    conns = res["conns"]
    for test, path in TFB_TESTS:
        rows = [(s, c, pts[(s, test, c)]) for s in TFB_SYSTEMS for c in conns
                if (s, test, c) in pts]
        if not rows:
            continue
        w("### `%s`" % path)
        w("")
        w("| system | connections | requests/s | p99 ms | server CPU µs/req | PostgreSQL CPU "
          "µs/req | RSS MiB | errors | dbscope loop ÷ it |")
        w("|---|---|---|---|---|---|---|---|---|")
        for s, c, p in rows:
            d = pts.get(("dbscope-loop", test, c))
            r = d["rps"] / p["rps"] if d and s != "dbscope-loop" and p["rps"] else None
            w("| %s | %d | %s | %s | %s | %s | %.0f | %s | %s |" % (
                TFB_NAMES.get(s, s), c, fmt(p["rps"]),
                fmt(p["p99_us"] / 1e3) if p.get("p99_us") is not None else "-",
                fmt(p["server_us_req"]), fmt(p["db_us_req"]), p["rss_kb"] / 1024.0,
                p["errors"] or ("" if p["requests"] else "no request done"),
                "%.2f×" % r if r else ""))
        w("")
    w("### Targets")
    w("")
    tg = tfb_targets(pts)
    for text, ok in tg:
        w("- %s: %s." % (text, "**met**" if ok else "**missed**"))
    if not tg:
        w("- No target could be checked: dbscope's tfb-server was not measured.")
    w("")
    w("Servers as run (`--listen` at a free port; `DATABASE_URL` in the environment):")
    w("")
    w("```")
    for s, i in res["systems"].items():
        if i.get("argv"):
            w(portable(" ".join(i["argv"]), res.get("root", "")))
    w("```")
    w("")
    w("Versions: " + "; ".join("%s %s" % kv for kv in res.get("versions", {}).items()) + ".")
    w("")
    w(TFB_END)
    return "\n".join(L)


def write_tfb_section(md_path, res):
    """Puts the tfb section into benchmarks.md in place of the last one
    (before the targets when it has none yet), the rest left as it is."""
    text = tfb_section(res)
    md = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n"
    if TFB_BEGIN in md and TFB_END in md:
        a, b = md.index(TFB_BEGIN), md.index(TFB_END) + len(TFB_END)
        md = md[:a] + text + md[b:]
    elif "\n## Targets" in md:
        i = md.index("\n## Targets") + 1
        md = md[:i] + text + "\n\n" + md[i:]
    else:
        md = md.rstrip("\n") + "\n\n" + text + "\n"
    with open(md_path, "w") as f:
        f.write(md)


if __name__ == "__main__":
    # Writes the report again from the last run's results (after editing
    # notes.md, say): python3 bench/report.py [docs]
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
    with open(os.path.join(out, "bench", "results.json")) as f:
        d = json.load(f)
    med = {tuple(k): v for k, v in d["med"]}
    commands = {tuple(k): v for k, v in d["commands"]}
    write(out, med, commands, d["rec"], d["mem"], d["ver"], d["meta"])
