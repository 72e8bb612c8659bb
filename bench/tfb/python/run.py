#!/usr/bin/python3
"""Starts bench/tfb/python/app.py under uvicorn with one worker process per
core (uvloop, httptools), as TechEmpower's fastapi-uvicorn entry does.

    DATABASE_URL=postgresql://... /usr/bin/python3 bench/tfb/python/run.py \\
        --listen HOST:PORT [--workers N] [--pool N (connections per worker)]
"""
import argparse
import os
import sys

import uvicorn

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:8080")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--pool", type=int, default=4)
    a = ap.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit("set DATABASE_URL (postgresql://user:password@host:port/db)")
    os.environ["TFB_POOL"] = str(a.pool)
    host, port = a.listen.rsplit(":", 1)
    here = os.path.dirname(os.path.abspath(__file__))
    uvicorn.run("app:app", app_dir=here, host=host, port=int(port), workers=a.workers,
                loop="uvloop", http="httptools", log_level="warning", access_log=False)
