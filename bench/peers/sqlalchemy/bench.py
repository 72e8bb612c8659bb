#!/usr/bin/python3
"""The SQLAlchemy 1.4 QueuePool adapter of the benchmark harness: the same
scenarios, loop and output as bench/peers/native/bench.c.

  /usr/bin/python3 bench.py SCENARIO --db SQLALCHEMY_URL [--matrix T:P,...]
                   [--seconds S] [--warmup S] [--timeline]

Run with Debian's /usr/bin/python3 (python3-sqlalchemy, python3-psycopg2).
Default pool settings, as an application would have them, except the size.
"""
import argparse
import json
import math
import resource
import threading
import time

import sqlalchemy
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

ROWS, HB, TL_MAX = 1000, 64 * 16, 600


def bucket(ns):
    if ns < 16:
        return max(int(ns), 0)
    o = int(ns).bit_length() - 1
    b = (o - 3) * 16 + ((int(ns) >> (o - 4)) & 15)
    return min(b, HB - 1)


def bucket_ns(b):
    if b < 16:
        return b
    o = b // 16 + 3
    return (16 + b % 16) * (1 << (o - 4)) * 1.03


def percentile(h, q):
    n = sum(h)
    if n == 0:
        return 0.0
    rank, seen = math.ceil(q * n), 0
    for i, c in enumerate(h):
        seen += c
        if seen >= rank:
            return bucket_ns(i)
    return bucket_ns(HB - 1)


class Worker(threading.Thread):
    def __init__(self, run, idx):
        super().__init__(daemon=True)
        self.run_, self.idx = run, idx
        self.ops = self.errors = self.checksum = self.expected = self.wait_max = 0
        self.lat, self.wait = [0] * HB, [0] * HB
        self.tl_ops, self.tl_err = [0] * TL_MAX, [0] * TL_MAX

    def run(self):
        r = self.run_
        x = (0x9e3779b97f4a7c15 * (self.idx + 1)) & 0xFFFFFFFFFFFFFFFF
        sel = text("SELECT v FROM bench WHERE id = :id")
        upd = text("UPDATE bench SET n = n + 1 WHERE id = :id")
        while not r.stop:
            x ^= (x << 13) & 0xFFFFFFFFFFFFFFFF
            x ^= x >> 7
            x ^= (x << 17) & 0xFFFFFFFFFFFFFFFF
            id_ = x % ROWS + 1
            t0 = time.perf_counter_ns()
            t1, v, ok = t0, 0, False
            try:
                if r.cycle:
                    c = r.engine.connect()
                    t1 = time.perf_counter_ns()
                    c.close()
                    ok = True
                else:
                    with r.engine.connect() as c:
                        t1 = time.perf_counter_ns()
                        with c.begin():
                            v = c.execute(sel, {"id": id_}).scalar()
                            ok = v is not None
                            if ok and r.update:
                                ok = c.execute(upd, {"id": id_}).rowcount == 1
                            if not ok:
                                raise RuntimeError("row missing")
            except Exception:
                ok = False
            t2 = time.perf_counter_ns()
            if not r.measuring:
                continue
            if r.timeline:
                slot = (t2 - r.t0) // 100_000_000
                if 0 <= slot < TL_MAX:
                    if ok:
                        self.tl_ops[slot] += 1
                    else:
                        self.tl_err[slot] += 1
            if not ok:
                self.errors += 1
                time.sleep(0.001)  # back off as every adapter does
                continue
            self.ops += 1
            self.lat[bucket(t2 - t0)] += 1
            self.wait[bucket(t1 - t0)] += 1
            self.wait_max = max(self.wait_max, t1 - t0)
            if not r.cycle:
                self.checksum += v
                self.expected += 3 * id_


class Run:
    pass


def sum_n(engine):
    with engine.connect() as c:
        return c.execute(text("SELECT coalesce(sum(n), 0) FROM bench")).scalar()


def run_one(args, threads, pool):
    r = Run()
    r.cycle = args.scenario == "cycle"
    r.update = args.scenario in ("pg", "recovery")
    r.timeline = args.timeline
    r.stop = r.measuring = False
    # pysqlite refuses a connection used by a thread other than its
    # creator unless told; a pool must hand connections across threads
    extra = {"connect_args": {"check_same_thread": False}} if args.db.startswith("sqlite") else {}
    r.engine = sqlalchemy.create_engine(args.db, poolclass=QueuePool, pool_size=pool,
                                        max_overflow=0, pool_timeout=30, **extra)
    before = sum_n(r.engine) if r.update and not r.timeline else 0
    ws = [Worker(r, i) for i in range(threads)]
    for w in ws:
        w.start()
    time.sleep(args.warmup)
    r.t0 = time.perf_counter_ns()
    wall0 = time.time()
    r.measuring = True
    time.sleep(args.seconds)
    r.measuring = False
    elapsed = time.perf_counter_ns() - r.t0
    r.stop = True
    for w in ws:
        w.join()
    ops = sum(w.ops for w in ws)
    lat = [sum(w.lat[b] for w in ws) for b in range(HB)]
    wait = [sum(w.wait[b] for w in ws) for b in range(HB)]
    check = "ok" if sum(w.checksum for w in ws) == sum(w.expected for w in ws) else "bad"
    if r.update and not r.timeline and sum_n(r.engine) - before < ops:
        check = "bad"
    r.engine.dispose()
    secs = elapsed / 1e9
    out = {"system": "sqlalchemy", "scenario": args.scenario, "threads": threads, "pool": pool,
           "ops": ops, "secs": round(secs, 3), "ops_s": round(ops / secs, 1),
           "p50_us": round(percentile(lat, 0.5) / 1e3, 2),
           "p99_us": round(percentile(lat, 0.99) / 1e3, 2),
           "wait_p99_us": round(percentile(wait, 0.99) / 1e3, 2),
           "wait_max_us": round(max(w.wait_max for w in ws) / 1e3, 1),
           "min_thread": min(w.ops for w in ws), "max_thread": max(w.ops for w in ws),
           "errors": sum(w.errors for w in ws), "checksum": sum(w.checksum for w in ws),
           "check": check, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    print("RESULT " + json.dumps(out), flush=True)
    if r.timeline:
        slots = min(int(elapsed // 100_000_000), TL_MAX)
        tl = {"system": "sqlalchemy", "start": wall0, "bucket_ms": 100,
              "ops": [sum(w.tl_ops[s] for w in ws) for s in range(slots)],
              "errors": [sum(w.tl_err[s] for w in ws) for s in range(slots)]}
        print("TIMELINE " + json.dumps(tl), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario")
    ap.add_argument("--db", required=True)
    ap.add_argument("--matrix", default="1:4")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=0.2)
    ap.add_argument("--timeline", action="store_true")
    args = ap.parse_args()
    for entry in args.matrix.split(","):
        t, p = entry.split(":")
        run_one(args, int(t), int(p))


if __name__ == "__main__":
    main()
