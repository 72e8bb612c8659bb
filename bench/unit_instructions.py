#!/usr/bin/env python3
"""Instructions a unit of work costs, counted by valgrind (callgrind), for
dbscope and the C peers that run inside one process: a measure that load
from outside does not move, where the timed runs of bench/run swing by
10-30% on a shared machine.

    bench/unit_instructions.py [--build DIR] [SCENARIO ...]
    defaults: build/dev; sqlite cycle

Each system runs its scenario through bench_native under callgrind (one
thread, a pool of 8, 2 s), and a unit's cost is the inclusive count of the
system's own acquire, unit and release functions over the number of calls:
the harness's loop (its clock reads and histogram), start-up and the
pool's set-up are left out. Needs valgrind (scripts/packages/bench.txt).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# system -> the prefix of its functions in bench/peers/native/bench.c
PREFIX = {"dbscope": "d", "dbscope-blind": "d", "dbscope-rollback": "d", "direct": "x",
          "zdb": "z", "lock": "f"}
SYSTEMS = {"sqlite": ["dbscope", "dbscope-blind", "direct", "zdb"],
           "cycle": ["dbscope", "dbscope-blind", "lock", "zdb"]}


def per_unit(native, system, scenario, url, work):
    out = os.path.join(work, "cg.out")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, native,
                        system, scenario, "--db", url, "--matrix", "1:8", "--seconds", "2",
                        "--warmup", "0.2"], capture_output=True, text=True)
    if '"check":"ok"' not in r.stdout + r.stderr:
        sys.exit("%s %s: no result\n%s" % (system, scenario, (r.stdout + r.stderr)[-2000:]))
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=caller",
                          "--threshold=100", out], capture_output=True, text=True).stdout
    p = PREFIX[system]
    total, calls = 0, {}
    callers = 0
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+<\s.*\((\d[\d,]*)x\)", line)
        if m:
            callers += int(m.group(2).replace(",", ""))
            continue
        m = re.match(r"^\s*([\d,]+) \([^)]*\)\s+\*\s+\S*:(\w+)\b", line)
        if m:
            fn = m.group(2)
            if fn in (p + "_acquire", p + "_release") or (scenario != "cycle" and fn == p + "_unit"):
                total += int(m.group(1).replace(",", ""))
                calls[fn] = callers
        callers = 0
    if not calls:
        sys.exit("%s %s: its functions were not found (build with debug info)" % (system, scenario))
    return total / calls.get(p + "_acquire", max(calls.values()))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build", "dev"))
    ap.add_argument("scenarios", nargs="*", default=["sqlite", "cycle"])
    a = ap.parse_args()
    native = os.path.join(a.build, "bench", "bench_native")
    if not os.access(native, os.X_OK):
        sys.exit("no %s: build with -DDBSCOPE_BUILD_BENCH=ON" % native)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    work = tempfile.mkdtemp(prefix="dbscope-instr.")
    try:
        db = os.path.join(work, "bench.db")
        subprocess.run([native, "setup", "sqlite", "--db", "sqlite:" + db], check=True)
        for sc in a.scenarios:
            if sc not in SYSTEMS:
                sys.exit("scenario %s: only %s run in one process" % (sc, ", ".join(SYSTEMS)))
            print("== %s: instructions a unit (1 thread, pool of 8)" % sc)
            base = None
            for system in SYSTEMS[sc]:
                url = ("sqlite://" if system == "zdb" else "sqlite:") + db
                n = per_unit(native, system, sc, url, work)
                base = base or n
                print("%-16s %9.0f   it ÷ dbscope: %.2fx" % (system, n, n / base), flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
