#!/usr/bin/env python3
"""tfb-server against the TechEmpower toolset's rules (toolset/test_types/
*/verify.py and verifications.py), over real HTTP, on a real PostgreSQL
database of its own made by --setup, in one mode (--mode loop|threads):

  - every route: Server, Date (RFC 1123, not cached), Content-Type as the
    verifier's patterns want it, Content-Length or Transfer-Encoding;
  - /json and /plaintext bodies; /db one world object; /queries and
    /updates clamp ?queries= to 1..500 and take 1 for anything else; the
    rows are the database's;
  - /fortunes: the 12 rows and the added one, sorted, HTML-escaped,
    compared after the verifier's normalization;
  - /updates: what it answers is what the table holds afterwards;
  - twice as many concurrent clients as the pool has connections;
  - the cancel path: a client that goes away during /sleep?s=3600 frees
    its connection (its statement ends on the server). In loop mode the
    statement bound is far longer than the test may run, so only the
    cancel can end it; in threads mode the blocking call cannot be
    cancelled and the statement bound (4 s) ends it;
  - short of connections, a request gets 503 (DBS_EBUSY past the loop's
    queue, DBS_ETIMEOUT past the acquire bound), and the server serves
    again once they are free;
  - SIGTERM stops the server with status 0, and starts no statement after
    it, also while a client keeps opening connections and pipelining.
Standard library only; psql for the database's side.
"""
import argparse
import datetime
import html.parser
import http.client
import json
import os
import re
import resource
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


def psql(url, sql):
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit("psql failed: %s" % out.stderr)
    return out.stdout.strip().splitlines()


class Server:
    def __init__(self, binary, mode, url, env_extra, extra_args=(), nofile=None):
        env = dict(os.environ)
        env.update({"DATABASE_URL": url, "DB_POOL_SIZE": "4", "DB_MAX_OVERFLOW": "0",
                    "DB_POOL_MIN_IDLE": "0"})
        env.update(env_extra)
        supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan.supp")
        env["LSAN_OPTIONS"] = (env.get("LSAN_OPTIONS", "") + " suppressions=" + supp).strip()
        # Loop mode: two loops of two connections each. Threads mode: as
        # many HTTP threads as connections (the default).
        argv = [binary, "--mode", mode, "--listen", "127.0.0.1:0", "--setup", "--test-routes"]
        if "--threads" in extra_args:
            pass
        elif mode == "loop":
            argv += ["--threads", "2"]
        argv += list(extra_args)
        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True, preexec_fn=limit)
        self.lines = []
        line = self.proc.stdout.readline()
        self.lines.append(line)
        m = re.search(r"listening on ([^:]+):(\d+)", line)
        if not m:
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            raise SystemExit("tfb-server did not start: %s%s" % (line, rest))
        self.host, self.port = m.group(1), int(m.group(2))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class Client:
    def __init__(self, srv):
        self.srv = srv
        self.conn = http.client.HTTPConnection(srv.host, srv.port, timeout=120)

    def get(self, path):
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        body = r.read()
        headers = {k.lower(): v for k, v in r.getheaders()}
        return r.status, headers, body


CONTENT_TYPES = {
    "json": r"^application/json(; ?charset=(UTF|utf)-8)?$",
    "html": r"^text/html; ?charset=(UTF|utf)-8$",
    "plaintext": r"^text/plain(; ?charset=(UTF|utf)-8)?$",
}


def check_headers(c, path, kind):
    status, h, body = c.get(path)
    ok = status == 200
    ok &= all(k in h for k in ("server", "date", "content-type"))
    ok &= "content-length" in h or "transfer-encoding" in h
    try:
        datetime.datetime.strptime(h.get("date", ""), "%a, %d %b %Y %H:%M:%S %Z")
    except ValueError:
        ok = False
    ok &= bool(re.match(CONTENT_TYPES[kind], h.get("content-type", "")))
    check(ok, "%s: 200, Server, Date, Content-Type %s, length (%s)" % (path, kind, h))
    return h


def check_world(o, db=None):
    if not isinstance(o, dict) or set(o.keys()) != {"id", "randomNumber"}:
        return False
    if not isinstance(o["id"], int) or not isinstance(o["randomNumber"], int):
        return False
    if not 1 <= o["id"] <= 10000 or not 1 <= o["randomNumber"] <= 10000:
        return False
    return db is None or db.get(o["id"]) == o["randomNumber"]


def world_table(url):
    return {int(a): int(b) for a, b in (l.split("|") for l in psql(url, "SELECT id, randomnumber FROM world"))}


# The page the verifier compares against (toolset/test_types/fortune/
# fortune_html_parser.py, after its normalization).
FORTUNES = (
    "<!doctype html><html>\n<head><title>Fortunes</title></head>\n<body><table>\n"
    "<tr><th>id</th><th>message</th></tr>\n"
    "<tr><td>11</td><td>&lt;script&gt;alert(&quot;This should not be displayed in a browser alert box.&quot;);&lt;/script&gt;</td></tr>\n"
    "<tr><td>4</td><td>A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1</td></tr>\n"
    "<tr><td>5</td><td>A computer program does what you tell it to do, not what you want it to do.</td></tr>\n"
    "<tr><td>2</td><td>A computer scientist is someone who fixes things that aren&apos;t broken.</td></tr>\n"
    "<tr><td>8</td><td>A list is only as strong as its weakest link. \u2014 Donald Knuth</td></tr>\n"
    "<tr><td>0</td><td>Additional fortune added at request time.</td></tr>\n"
    "<tr><td>3</td><td>After enough decimal places, nobody gives a damn.</td></tr>\n"
    "<tr><td>7</td><td>Any program that runs right is obsolete.</td></tr>\n"
    "<tr><td>10</td><td>Computers make very fast, very accurate mistakes.</td></tr>\n"
    "<tr><td>6</td><td>Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen</td></tr>\n"
    "<tr><td>9</td><td>Feature: A bug with seniority.</td></tr>\n"
    "<tr><td>1</td><td>fortune: No such file or directory</td></tr>\n"
    "<tr><td>12</td><td>\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af</td></tr>\n"
    "</table></body></html>")

CHARREFS = {"34": "&quot;", "39": "&apos;", "43": "+", "62": "&gt;", "60": "&lt;", "47": "/",
            "40": "(", "41": ")"}


class Normalizer(html.parser.HTMLParser):
    """The verifier's normalization: tags kept bare, character references
    mapped to one spelling, quotes and > in text escaped."""

    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.out = []

    def handle_decl(self, decl):
        self.out.append("<!%s>" % decl.lower())

    def handle_charref(self, name):
        n = name.lower()
        n = str(int(n[1:], 16)) if n.startswith("x") else str(int(n))
        if n in CHARREFS:
            self.out.append(CHARREFS[n])

    def handle_entityref(self, name):
        self.out.append("\u2014" if name == "mdash" else "&%s;" % name)

    def handle_starttag(self, tag, attrs):
        self.out.append("<%s>" % tag)
        if tag.lower() in ("table", "html"):
            self.out.append("\n")

    def handle_endtag(self, tag):
        self.out.append("</%s>" % tag)
        if tag.lower() in ("tr", "head"):
            self.out.append("\n")

    def handle_data(self, data):
        if data.strip():
            self.out.append(data.replace("'", "&apos;").replace('"', "&quot;").replace(">", "&gt;"))


def routes(srv, url):
    c = Client(srv)
    for path, kind in (("/json", "json"), ("/plaintext", "plaintext"), ("/db", "json"),
                       ("/queries?queries=2", "json"), ("/fortunes", "html"),
                       ("/updates?queries=2", "json")):
        h1 = check_headers(c, path, kind)
        if path == "/json":
            time.sleep(1.2)
            h2 = check_headers(c, path, kind)
            check(h1.get("date") != h2.get("date"), "Date is not cached (%s, then %s)"
                  % (h1.get("date"), h2.get("date")))
    status, h, body = c.get("/json")
    check(status == 200 and json.loads(body) == {"message": "Hello, World!"}, "/json body: %r" % body)
    status, h, body = c.get("/plaintext")
    check(status == 200 and body == b"Hello, World!", "/plaintext body: %r" % body)
    status, h, body = c.get("/nothing")
    check(status == 404, "an unknown path is 404 (%d)" % status)
    status, h, body = c.get("/sleepy")
    check(status == 404, "/sleepy is no route (%d)" % status)

    db = world_table(url)
    check(len(db) == 10000, "--setup made world with 10000 rows (%d)" % len(db))
    for _ in range(20):
        status, h, body = c.get("/db")
        o = json.loads(body)
        if not check(status == 200 and check_world(o, db), "/db: a world row as stored: %r" % body):
            break

    cases = [("2", 2), ("0", 1), ("foo", 1), ("501", 500), ("", 1), (None, 1), ("-3", 1),
             ("20", 20), ("500", 500), ("1x", 1), ("99999999999999999999", 500)]
    for route in ("/queries", "/updates"):
        for q, want in cases:
            path = route if q is None else "%s?queries=%s" % (route, q)
            if route == "/queries":
                status, h, body = c.get(path)
                o = json.loads(body) if status == 200 else None
                check(isinstance(o, list) and len(o) == want and all(check_world(w, db) for w in o),
                      "%s: %d world rows as stored" % (path, want))
            else:
                status, h, body = c.get(path)
                o = json.loads(body) if status == 200 else None
                after = world_table(url)
                ok = isinstance(o, list) and len(o) == want and all(check_world(w, after) for w in o)
                check(ok, "%s: %d rows, each as the table holds it afterwards" % (path, want))
    # The query string is form-encoded (RFC 3986 escapes, '+' a space) and
    # its names are compared exactly; the first queries= counts. Both modes
    # decode it the same way.
    encoded = [("queries=%32%30", 20), ("queries=%35", 5), ("queries=%2B5", 5), ("queries=+5", 1),
               ("queries=%00", 1), ("queries=5%00", 1), ("queries=1e3", 1), ("queries=-1", 1),
               ("queries=%zz", 1), ("%71ueries=4", 4), ("Queries=4", 1), ("queries=2&queries=3", 2),
               ("&queries=7", 7), ("queries", 1), ("x=1&queries=6", 6)]
    for q, want in encoded:
        path = "/queries?" + q
        status, h, body = c.get(path)
        o = json.loads(body) if status == 200 else None
        check(isinstance(o, list) and len(o) == want, "%s: %d world rows (%s)" % (
            path, want, len(o) if isinstance(o, list) else status))
    before = world_table(url)
    status, h, body = c.get("/updates?queries=500")
    after = world_table(url)
    changed = sum(1 for k in before if before[k] != after[k])
    o = json.loads(body)
    distinct = len({w["id"] for w in o})
    check(status == 200 and len(o) == 500 and changed >= distinct * 0.95,
          "/updates?queries=500: %d of %d distinct rows changed in the table" % (changed, distinct))

    status, h, body = c.get("/fortunes")
    p = Normalizer()
    p.feed(body.decode("utf-8"))
    got = "".join(p.out)
    check(status == 200 and got == FORTUNES, "/fortunes: the verifier's page after normalization")
    if got != FORTUNES:
        print(got)
    check("&lt;script&gt;" in body.decode() and "<script>" not in body.decode(),
          "/fortunes escapes the stored <script>")


def concurrent(srv, url):
    """8 clients on a pool of 4 connections, every route, each answer right."""
    errors = []

    def client(k):
        c = Client(srv)
        for i in range(15):
            path = ["/db", "/queries?queries=20", "/fortunes", "/updates?queries=5",
                    "/json"][(k + i) % 5]
            try:
                status, h, body = c.get(path)
                if status != 200:
                    errors.append("%s: %d %r" % (path, status, body[:200]))
                elif path.startswith("/queries") or path.startswith("/updates"):
                    o = json.loads(body)
                    if len(o) != int(path.split("=")[1]) or not all(check_world(w) for w in o):
                        errors.append("%s: %r" % (path, body[:200]))
            except Exception as e:  # noqa: BLE001
                errors.append("%s: %s" % (path, e))
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "8 concurrent clients on 4 connections: every answer 200 and right %s"
          % errors[:3])
    n = int(psql(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid()")[0])
    check(n <= 4, "the server holds at most its 4 connections (%d)" % n)


def sleeping(super_url, db):
    return int(psql(super_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' "
                               "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'" % db)[0])


def cancel(srv, super_url, db, mode):
    s = socket.create_connection((srv.host, srv.port))
    s.sendall(b"GET /sleep?s=3600 HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(0.05)
    while sleeping(super_url, db) == 0:
        try:
            answer = s.recv(4096)
        except socket.timeout:
            continue
        check(False, "/sleep?s=3600 answered before it ran: %r" % answer)
        return
    check(True, "/sleep?s=3600 runs on the server")
    s.close()
    # No time asserted: the sleep is far longer than this test may run
    # (CTest's timeout); it ends only through the cancel (loop) or the
    # statement bound (threads).
    while sleeping(super_url, db) != 0:
        time.sleep(0.05)
    check(True, "the client went away: its pg_sleep ended on the server (%s)" %
          ("cancelled" if mode == "loop" else "statement bound"))
    # The connection is back in service: every connection serves again.
    errors = []

    def one():
        try:
            status, h, body = Client(srv).get("/queries?queries=3")
            if status != 200:
                errors.append(status)
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
    ts = [threading.Thread(target=one) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "after the cancel, 8 clients are served (%s)" % errors)


def raw_get(srv, path):
    s = socket.create_connection((srv.host, srv.port))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def status_of(s):
    """The status of the answer on raw socket s (blocks for it)."""
    s.settimeout(120)
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    return int(m.group(1)) if m else -1


def shedding(binary, mode, url, super_url, db):
    """Short of connections, a request gets 503, never a wait without
    bound; the server serves again afterwards. The 4 connections are held
    by sleeps. Loop mode: one loop, no pipelining, a queue of one unit: of
    two more requests one waits in the queue and the other is refused
    (DBS_EBUSY). Threads mode: 8 HTTP threads, a 300 ms acquire bound: the
    fifth request gets no connection (DBS_ETIMEOUT). Nothing is timed: the
    sleeps last far longer than the test."""
    if mode == "loop":
        args = ["--threads", "1", "--pipeline", "1", "--queue-max", "1"]
        env = {"DB_STATEMENT_TIMEOUT_MS": "600000"}
    else:
        args = ["--threads", "8"]
        env = {"DB_STATEMENT_TIMEOUT_MS": "600000", "DB_ACQUIRE_TIMEOUT_MS": "300"}
    srv = Server(binary, mode, url, env, args)
    held = []
    try:
        # One at a time: units that wait while the loop still connects
        # count against its queue too.
        for i in range(4):
            held.append(raw_get(srv, "/sleep?s=3600"))
            while sleeping(super_url, db) <= i:
                early, _, _ = select.select(held, [], [], 0.05)
                if early:
                    check(False, "a sleep answered early: %d" % status_of(early[0]))
                    return
        if mode == "loop":
            more = [raw_get(srv, "/db"), raw_get(srv, "/db")]
            held += more
            ready = []
            while not ready:
                ready, _, _ = select.select(more, [], [], 1)
            st = status_of(ready[0])
            check(st == 503, "loop: a unit past --queue-max is refused with 503 (%d)" % st)
            for s in held:
                s.close()
        else:
            st = status_of(raw_get(srv, "/db"))
            check(st == 503, "threads: no connection within the acquire bound is 503 (%d)" % st)
            psql(super_url, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
                            "AND query LIKE 'SELECT pg_sleep%%'" % db)
            sts = [status_of(s) for s in held]
            check(all(x == 500 for x in sts), "threads: the cancelled sleeps answer 500 (%s)" % sts)
        while sleeping(super_url, db) != 0:
            time.sleep(0.05)
        status, h, body = Client(srv).get("/queries?queries=5")
        check(status == 200, "served again once the connections are free (%d)" % status)
        rc = srv.stop()
        srv = None
        check(rc == 0, "stops with status 0 (%d)" % rc)
    finally:
        for s in held:
            s.close()
        if srv:
            srv.proc.kill()
            print("".join(srv.lines))


def gone_queued(binary, mode, url, super_url, db):
    """Requests whose clients went away while they waited for the server
    are not run: with every connection (loop) or HTTP thread (threads)
    held by a sleep, 8 clients send /sleep?s=3600 and close at once; once
    the held sleeps end (pg_cancel_backend), a new client is served and
    none of the 8 sleeps reaches the server meanwhile. Nothing is timed: a
    sleep of a client that left would hold its connection or thread far
    longer than the test runs, and is seen on the server."""
    if mode == "loop":
        args = ["--threads", "1", "--pipeline", "1"]
    else:
        args = ["--threads", "4"]
    srv = Server(binary, mode, url, {"DB_STATEMENT_TIMEOUT_MS": "600000"}, args)
    held = []
    try:
        for i in range(4):
            held.append(raw_get(srv, "/sleep?s=3600"))
            while sleeping(super_url, db) <= i:
                time.sleep(0.05)
        for _ in range(8):
            raw_get(srv, "/sleep?s=3600").close()
        # Loop mode looks for clients that left every 100 ms: 2 s is
        # ample. Threads mode cannot look before a thread is free.
        time.sleep(2)
        psql(super_url, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = '%s' "
                        "AND query LIKE 'SELECT pg_sleep%%'" % db)
        # Their answers say the connections (threads) are free again.
        sts = [status_of(s) for s in held]
        check(all(x == 500 for x in sts), "%s: the cancelled sleeps answer 500 (%s)" % (mode, sts))
        live = raw_get(srv, "/db")
        ran = 0
        while not ran:
            ready, _, _ = select.select([live], [], [], 0.5)
            if ready:
                break
            ran = sleeping(super_url, db)
        check(ran == 0, "%s: no sleep of the 8 clients that went away runs (%d running)" % (mode, ran))
        if not ran:
            st = status_of(live)
            check(st == 200, "%s: a new client is served after them (%d)" % (mode, st))
            ran = sleeping(super_url, db)
            check(ran == 0, "%s: and none of the 8 sleeps runs then (%d)" % (mode, ran))
        live.close()
    finally:
        for s in held:
            s.close()
        srv.proc.kill()
        srv.proc.wait()


def answer_of(s):
    """(status, body) of the answer on raw socket s, or (-1, b"") when the
    server closed it unanswered."""
    s.settimeout(120)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            if sep and m and len(body) >= int(m.group(1)):
                break
    except OSError:
        pass
    m = re.match(rb"HTTP/1\.[01] (\d+)", data)
    return (int(m.group(1)), data.partition(b"\r\n\r\n")[2]) if m else (-1, b"")


def term_under_load(binary, mode, url, super_url, db):
    """SIGTERM with requests running and more waiting: the server exits
    with status 0 and starts none of the waiting ones (no sleep starts on
    the server after the signal), and what it answers is 503 (it is going
    away), but for the statements already running, which end as they end
    (threads mode: a blocking call cannot be stopped, the 4 s statement
    bound ends it; loop mode: DBS_ECOMMIT_UNKNOWN, their COMMIT having gone
    out in the flight). 4 connections (loop) or HTTP threads (threads)
    hold a sleep each, with a second one pipelined behind it, and 24 more
    clients wait."""
    # Each connection's two sleeps hold it for 8 s in all (the 4 s bound):
    # on a machine so loaded that the four are not all seen running
    # within that, the set-up starts again on a new server rather than
    # wait for a count it can no longer reach.
    for attempt in range(3):
        if term_under_load_once(binary, mode, url, super_url, db):
            return
        print("note %s: SIGTERM under load: the 4 sleeps were not all running within "
              "their bound (a loaded machine); set up again" % mode, flush=True)
    check(False, "%s: SIGTERM under load: the 4 sleeps never ran at once in 3 set-ups" % mode)


def term_under_load_once(binary, mode, url, super_url, db):
    args = ["--threads", "1", "--pipeline", "1"] if mode == "loop" else ["--threads", "4"]
    srv = Server(binary, mode, url, {"DB_STATEMENT_TIMEOUT_MS": "4000"}, args)
    clients = []
    sleep_req = b"GET /sleep?s=3600 HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        first = time.monotonic()
        for i in range(4):
            s = socket.create_connection((srv.host, srv.port))
            s.sendall(sleep_req * 2)
            clients.append(s)
            while sleeping(super_url, db) <= i:
                if time.monotonic() - first > 6:
                    return False
                time.sleep(0.05)
        for _ in range(24):
            clients.append(raw_get(srv, "/sleep?s=3600"))
        time.sleep(0.5)
        t0 = psql(super_url, "SELECT clock_timestamp()")[0]
        srv.proc.send_signal(signal.SIGTERM)
        started = 0
        while srv.proc.poll() is None and not started:
            started = int(psql(super_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                          "'%s' AND query LIKE 'SELECT pg_sleep%%' AND "
                                          "query_start > '%s'" % (db, t0))[0])
            time.sleep(0.05)
        check(started == 0, "%s: SIGTERM: no waiting request starts a sleep after it (%d)"
              % (mode, started))
        answers = [answer_of(s) for s in clients]
        rc = srv.proc.wait(timeout=120)
        check(rc == 0, "%s: SIGTERM under load: status 0 (%d)" % (mode, rc))
        ran = [a for a in answers if b"statement timeout" in a[1] or b"outcome is unknown" in a[1]]
        other = [a for a in answers if a not in ran and a[0] not in (503, -1)]
        check(len(ran) <= 4, "%s: SIGTERM: only the 4 sleeps already running end as they ran "
              "(%d)" % (mode, len(ran)))
        check(not other, "%s: SIGTERM: the rest is answered 503 or closed (%d: %s)"
              % (mode, len(other), [(a[0], a[1][:80]) for a in other][:2]))
        return True
    finally:
        for s in clients:
            s.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()


def term_under_churn(binary, mode, url, super_url, db):
    """SIGTERM while a client keeps opening connections and pipelining
    /sleep requests on them: no sleep starts on the server after the
    signal (whatever the requests that arrive late get, it is not a new
    statement: the pool is shut to new sessions before the HTTP server
    stops), and the server exits 0 within a generous bound. The signal is
    sent at a moment when every running sleep has more than a second of
    its 4 s bound left, so that no connection (thread) frees itself
    between the moment taken and the signal."""
    args = ["--threads", "1", "--pipeline", "1"] if mode == "loop" else ["--threads", "4"]
    srv = Server(binary, mode, url, {"DB_STATEMENT_TIMEOUT_MS": "4000"}, args)
    stop = threading.Event()
    socks = []
    sleep_req = b"GET /sleep?s=3600 HTTP/1.1\r\nHost: x\r\n\r\n"

    def churn():
        while not stop.is_set():
            try:
                s = socket.create_connection((srv.host, srv.port), timeout=1)
                s.sendall(sleep_req * 4)
                socks.append(s)
            except OSError:
                pass
            time.sleep(0.02)
    th = threading.Thread(target=churn, daemon=True)
    rc = None
    try:
        th.start()
        # Long enough for connections to pile up behind the running
        # sleeps, a few bounds' worth: a libmicrohttpd thread that frees
        # then takes a batch of them and handles each before it looks at
        # the daemon's shutdown (6 s was not enough to show that).
        time.sleep(13)
        deadline = time.monotonic() + 120
        t0 = None
        while time.monotonic() < deadline:
            row = psql(super_url, "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - "
                                  "min(query_start)), 0), clock_timestamp() FROM pg_stat_activity "
                                  "WHERE datname = '%s' AND state = 'active' AND query LIKE "
                                  "'SELECT pg_sleep%%'" % db)[0].split("|")
            if int(row[0]) == 4 and 0.2 < float(row[1]) < 2.5:
                t0 = row[2]
                srv.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                break
            time.sleep(0.02)
        if not check(t0 is not None, "%s: under churn, 4 sleeps run on the server" % mode):
            return
        started = 0
        end = time.monotonic() + 120
        while srv.proc.poll() is None and time.monotonic() < end:
            started = max(started, int(psql(
                super_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND query "
                           "LIKE 'SELECT pg_sleep%%' AND query_start > '%s'" % (db, t0))[0]))
            time.sleep(0.05)
        try:
            rc = srv.proc.wait(timeout=max(1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            rc = None
        check(started == 0, "%s: SIGTERM under churn: no sleep starts after it (%d)"
              % (mode, started))
        check(rc == 0, "%s: SIGTERM under churn: exits 0 within 120 s (%s, after %.1f s)"
              % (mode, rc, time.monotonic() - signalled))
    finally:
        stop.set()
        th.join()
        for s in socks:
            s.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
            srv.proc.wait()
        if rc != 0:
            print("".join(srv.lines))


def cpu_seconds(pid):
    """CPU time (user and system) the process used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_flood(binary, mode, url):
    """More idle connections than the server has descriptors: they are
    closed after the idle bound (h2o's 10 s; libmicrohttpd's connection
    timeout, a round for each connection limit's worth of them) and a new
    client is served, without the flood's end; meanwhile the server does
    not spin on accept. The wait is bounded generously (120 s) rather
    than timed."""
    args = ["--threads", "1"] if mode == "loop" else ["--threads", "4"]
    srv = Server(binary, mode, url, {}, args, nofile=64)
    idle = []
    try:
        check(Client(srv).get("/db")[0] == 200, "%s: served before the flood" % mode)
        cpu0, wall0 = cpu_seconds(srv.proc.pid), time.monotonic()
        for _ in range(80):
            idle.append(socket.create_connection((srv.host, srv.port)))
        if mode == "loop":
            # Past its connection limit loop mode refuses a new client at
            # once: it is served on a later try, once idle ones are cut.
            live = None
            ok = served(srv)
        else:
            live = raw_get(srv, "/db")
            ready, _, _ = select.select([live], [], [], 120)
            ok = (status_of(live) if ready else -1) == 200
        check(ok, "%s: with 80 idle connections on 64 descriptors, a new client is served"
                  % mode)
        # Not a speed: a server that retries accept while it has no
        # descriptor spins for the whole wait (a quarter to a half of a
        # core here); one that waits uses next to nothing.
        cpu, wall = cpu_seconds(srv.proc.pid) - cpu0, time.monotonic() - wall0
        check(cpu < wall / 10, "%s: out of descriptors, the server waits rather than spins "
                              "(%.1f s of CPU in %.1f s)" % (mode, cpu, wall))
        if live:
            live.close()
    finally:
        for s in idle:
            s.close()
        rc = srv.stop()
        check(rc == 0, "%s: stops with status 0 after the flood (%d)" % (mode, rc))


def read_answer(s, wait):
    """The status of the first answer on raw socket s: -1 when the server
    closed it without one (or reset it), None when nothing came in wait s."""
    s.settimeout(wait)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        return None
    except OSError:
        return -1
    m = re.match(rb"HTTP/1\.1 (\d+)", data)
    return int(m.group(1)) if m else -1


def served(srv, within=120):
    """Whether a new client gets /json answered 200 within `within` s,
    trying again while it is refused (loop mode refuses connections past
    its limit until one of those it holds closes)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        s = raw_get(srv, "/json")
        st = read_answer(s, 60)
        s.close()
        if st == 200:
            return True
        time.sleep(0.2)
    return False


def past_the_limit(binary, mode, url):
    """One connection more than the server may hold. The connections held
    are served still, the one past the limit is refused at once (loop
    mode: answered 503 or closed, never left waiting; threads mode leaves
    it in the backlog), and once a held one closes a new client is served.
    (Loop mode had no limit: connections up to the descriptor limit, kept
    open by a byte now and then, stopped the service for everyone.)"""
    nofile = 64
    srv = Server(binary, mode, url, {}, ["--threads", "1" if mode == "loop" else "4"],
                 nofile=nofile)
    held = []
    try:
        m = re.search(r"(\d+) HTTP connections at most", srv.lines[0])
        # threads mode: tfb_connection_limit with one descriptor a thread
        limit = int(m.group(1)) if m else nofile - (2 * 4 + 4 + 32)
        if mode == "loop":
            check(m, "loop: the banner states the connection limit (%r)" % srv.lines[0].strip())
        for _ in range(limit):
            c = Client(srv)
            if c.get("/json")[0] != 200:
                break
            held.append(c)
        check(len(held) == limit, "%s: %d connections, each served (%d)" % (mode, limit, len(held)))
        extra = raw_get(srv, "/json")
        if mode == "loop":
            st = read_answer(extra, 30)
            check(st in (503, -1), "loop: the connection past the limit is refused at once (%s)"
                  % st)
        st = held[0].get("/db")[0]
        check(st == 200, "%s: past the limit, a held connection is still served (%d)" % (mode, st))
        st = held[-1].get("/plaintext")[0]
        check(st == 200, "%s: past the limit, another held one too (%d)" % (mode, st))
        held.pop().conn.close()
        if mode == "threads":
            st = read_answer(extra, 60)
            check(st == 200, "threads: once one closes, the waiting one is served (%s)" % st)
        extra.close()
        check(served(srv), "%s: once a held connection closes, a new client is served" % mode)
    finally:
        for c in held:
            c.conn.close()
        rc = srv.stop()
        check(rc == 0, "%s: stops with status 0 after the limit (%d)" % (mode, rc))
        if rc != 0:
            print("".join(srv.lines))


def slow_clients(binary, mode, url):
    """Clients that hold a connection by being slow are cut: one sending a
    request's headers a byte every 2 s (each byte came before the idle
    bound, so a bound that restarts on every read never ends it), and in
    loop mode one that sends its requests and never reads the answers (h2o
    has no bound while it writes), and a body larger than any route takes
    is refused at once rather than read into memory. The bounds are 10 s;
    the test waits up to 60 s (90 s for the answers to back up first)."""
    srv = Server(binary, mode, url, {}, ["--threads", "1" if mode == "loop" else "4"])
    socks = []
    try:
        loris = socket.create_connection((srv.host, srv.port))
        socks.append(loris)
        loris.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        end = time.monotonic() + 60
        st = None
        while st is None and time.monotonic() < end:
            try:
                loris.sendall(b"a")
            except OSError:
                st = -1
                break
            st = read_answer(loris, 2)
        check(st is not None and st != 200,
              "%s: a client sending its headers a byte every 2 s is cut (%s)" % (mode, st))
        if mode == "loop":
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.connect((srv.host, srv.port))
            socks.append(reader)
            # Answers (some 1.4 kB each) far past what the socket buffers
            # hold, asked for from a thread: once the server stops reading,
            # the requests back up too.
            def ask():
                try:
                    reader.sendall(b"GET /fortunes HTTP/1.1\r\nHost: x\r\n\r\n" * 8000)
                except OSError:
                    pass
            threading.Thread(target=ask, daemon=True).start()
            # Cut, the server closes the socket with requests unread: a
            # reset, seen here without reading a byte of the answers.
            p = select.poll()
            p.register(reader, select.POLLHUP | select.POLLERR)
            cut = p.poll(90 * 1000)
            check(cut, "loop: a client that does not read its answers is cut (%s)" % cut)
            body = socket.create_connection((srv.host, srv.port))
            socks.append(body)
            body.sendall(b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            st = read_answer(body, 30)
            check(st == 413, "loop: a body of 100 MB is refused at once (%s)" % st)
        check(served(srv), "%s: after the slow clients, a client is served" % mode)
    finally:
        for s in socks:
            s.close()
        rc = srv.stop()
        check(rc == 0, "%s: stops with status 0 after the slow clients (%d)" % (mode, rc))
        if rc != 0:
            print("".join(srv.lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--mode", required=True, choices=["loop", "threads"])
    ap.add_argument("--url-file", required=True)
    ap.add_argument("--super-url-file", required=True)
    args = ap.parse_args()

    url = open(args.url_file).read().strip()
    super_url = open(args.super_url_file).read().strip()
    name = "tfb_%s_%d_%s" % (args.mode, os.getpid(), secrets.token_hex(4))
    owner = urllib.parse.urlsplit(url).username
    psql(super_url, 'CREATE DATABASE "%s" OWNER "%s"' % (name, owner))
    db_url = urllib.parse.urlsplit(url)._replace(path="/" + name).geturl()
    # Loop mode: a statement bound no test run reaches, so that only the
    # cancel can end the sleep. Threads mode: a short one ends it.
    bound = "600000" if args.mode == "loop" else "4000"
    srv = None
    try:
        srv = Server(args.binary, args.mode, db_url, {"DB_STATEMENT_TIMEOUT_MS": bound})
        print(srv.lines[0].strip(), flush=True)
        tables = psql(db_url, "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables "
                              "WHERE schemaname = 'public'")
        check(tables == ["Fortune,World,fortune,world"], "--setup made the toolset's tables %s" % tables)
        routes(srv, db_url)
        concurrent(srv, db_url)
        cancel(srv, super_url, name, args.mode)
        rc = srv.stop()
        srv = None
        check(rc == 0, "SIGTERM stops the server with status 0 (%d)" % rc)
        # --setup again leaves existing tables alone.
        before = world_table(db_url)
        # Loop mode's second start runs without pipelining (--pipeline 0:
        # every SELECT of /queries and /updates a unit of its own), and
        # the verifier's rules hold there too.
        extra = ["--pipeline", "0"] if args.mode == "loop" else []
        srv = Server(args.binary, args.mode, db_url, {}, extra)
        check(world_table(db_url) == before, "--setup on existing tables changes nothing")
        if extra:
            routes(srv, db_url)
        rc = srv.stop()
        srv = None
        check(rc == 0, "second start and stop (%d)" % rc)
        shedding(args.binary, args.mode, db_url, super_url, name)
        gone_queued(args.binary, args.mode, db_url, super_url, name)
        idle_flood(args.binary, args.mode, db_url)
        past_the_limit(args.binary, args.mode, db_url)
        slow_clients(args.binary, args.mode, db_url)
        term_under_load(args.binary, args.mode, db_url, super_url, name)
        term_under_churn(args.binary, args.mode, db_url, super_url, name)
    finally:
        if srv:
            srv.proc.kill()
            print("".join(srv.lines))
        psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
    if FAILURES:
        print("%d FAILED:\n  %s" % (len(FAILURES), "\n  ".join(FAILURES)))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
