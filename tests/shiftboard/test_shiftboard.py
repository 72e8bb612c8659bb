#!/usr/bin/python3
"""Black-box tests of shiftboard: the real binary, real HTTP, a real database.

  test_shiftboard.py --binary PATH --backend sqlite
  test_shiftboard.py --binary PATH --backend pg --url-file FILE --super-url-file FILE
                     --rls-probe PATH
  test_shiftboard.py --binary PATH --backend pg-outage --pg-server tests/pg_server.sh --pg-dir DIR
  test_shiftboard.py --binary PATH --backend pg-notices --url-file FILE --super-url-file FILE
  test_shiftboard.py --binary PATH --backend hostile
  test_shiftboard.py --binary PATH --backend clock-step --clockshift LIB
  test_shiftboard.py --binary PATH --backend pg-silent --url-file FILE --super-url-file FILE
  test_shiftboard.py --binary PATH --backend mysql --url-file FILE --super-url-file FILE

sqlite and pg run the same API checks; pg runs them in a database of its
own on the shared throwaway server and adds that row-level security holds
for queries with no WHERE clause, through psql and through dbscope itself
(rls_probe.c). pg-outage starts a private PostgreSQL, stops it under the
service and starts it again: /health goes 503 with Retry-After and comes
back by itself. pg-notices starts the service on a fresh database and
looks for the server's notices in its log. hostile (SQLite) is slowloris
from one address and running out of file descriptors under ulimit -n 64.
pg-silent puts a TCP proxy between the service and PostgreSQL and makes it stop forwarding: 503s
with Retry-After instead of hangs, /health at once, SIGTERM still ends the
process.
mysql runs the API checks on MariaDB (tests/mysql_server.sh), in a
database of its own made with the mariadb client; MariaDB has no row-level
security, so isolation rests on the queries' own user_id conditions, which
concurrent_isolation checks. Only the standard library. No timing is
asserted: waits poll with generous limits, and "at once" means within a
bound far above need.
"""
import argparse
import http.client
import secrets
import select
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

FAILURES = []
USER_IDS = {}  # name -> id, as POST /api/users answered

# What a sanitizer prints when it finds something; the service's stderr must
# have none of it (the exit code catches most, not UBSan in a thread that
# recovered, nor a report in a process that was killed).
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer|"
                              r"runtime error:")


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# Environment every Service of this run gets (pg-replica: the replica's URL).
SERVICE_ENV = {}


class Service:
    """One shiftboard process on a free port."""

    def __init__(self, binary, url, workdir, extra_args=(), extra_env=None, env_extra=None,
                 nofile=None, cpus=None):
        self.port = free_port()
        env = dict(os.environ)
        env.update(extra_env or {})
        env.update(SERVICE_ENV)
        env["DATABASE_URL"] = url
        env["SHIFTBOARD_PWHASH"] = "min"  # argon2id at its cheapest: sanitizer builds
        env["DB_POOL_SIZE"] = "4"
        env.update(env_extra or {})
        self.err_path = os.path.join(workdir, "shiftboard-%d.log" % self.port)
        self.err = open(self.err_path, "w")
        cmd = [binary, "--listen", "127.0.0.1:%d" % self.port, "--threads", "8"] + list(extra_args)
        if nofile:
            cmd = ["prlimit", "--nofile=%d" % nofile, "--"] + cmd
        if cpus:
            cmd = ["taskset", "-c", ",".join(str(c) for c in cpus)] + cmd
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        self.banner = line
        if "listening on" not in line:
            self.proc.kill()
            raise SystemExit("shiftboard did not start: %r\n%s" % (line, self.log()))

    def log(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path) as f:
            return f.read()

    def request(self, method, path, body=None, token=None, headers=None, raw=None, source=None,
                timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout,
                                          source_address=(source, 0) if source else None)
        h = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if token:
            h["Authorization"] = "Bearer " + token
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode("utf-8", "replace")
        conn.close()
        doc = None
        if r.getheader("Content-Type", "").startswith("application/json") and text:
            doc = json.loads(text)
        return r.status, r, doc, text

    def stop(self):
        """SIGTERM: must finish in-flight work and exit 0."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self):
        try:
            code = self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = "hung"
        self.err.close()
        log = self.log()
        reports = [l for l in log.splitlines() if SANITIZER_REPORT.search(l)]
        check(not reports, "no sanitizer report from shiftboard: %s" % reports[:3])
        if code != 0 or reports or FAILURES:
            others = [l for l in log.splitlines() if "msg=request" not in l]
            print("---- shiftboard's stderr, request lines left out (last 40 lines) ----\n%s\n----"
                  % "\n".join(others[-40:]), flush=True)
        return code


def register_and_login(svc, name, password="correct horse"):
    st, _, doc, text = svc.request("POST", "/api/users", {"name": name, "password": password})
    check(st == 201 and isinstance(doc.get("id"), int), "register %s: %s %s" % (name, st, text))
    USER_IDS[name] = doc["id"]
    st, _, doc, text = svc.request("POST", "/api/login", {"name": name, "password": password})
    check(st == 200 and len(doc.get("token", "")) == 64, "login %s: %s %s" % (name, st, text))
    return doc["token"]


SHIFT = {"title": "Front desk", "starts_at": "2026-11-24T09:00:00Z",
         "ends_at": "2026-11-24T17:00:00Z"}


def list_ids(svc, token):
    """Every shift id the API lists for token's user, page by page."""
    ids, after = [], None
    while True:
        path = "/api/shifts?limit=200" + ("&after=%d" % after if after else "")
        st, _, doc, text = svc.request("GET", path, token=token)
        if not check(st == 200, "listing: %s %s" % (st, text[:120])):
            return ids
        ids += [s["id"] for s in doc["shifts"]]
        after = doc["next"]
        if after is None:
            return ids


def api_flow(svc):
    # /health gives the database less than a second to answer: on a
    # machine busy enough (sanitizers, parallel tests) one check may miss it
    for _ in range(20):
        st, _, doc, _ = svc.request("GET", "/health")
        if st == 200:
            break
        print("health not yet ok: %s %s" % (st, doc), flush=True)
        time.sleep(0.5)
    check(st == 200 and doc["status"] == "ok" and "in_use" in doc["pool"], "health ok")

    ann = register_and_login(svc, "ann")
    bob = register_and_login(svc, "bob")
    st, _, doc, _ = svc.request("POST", "/api/users", {"name": "ann", "password": "whatever12"})
    check(st == 409 and "taken" in doc["error"], "duplicate name is 409: %s" % st)
    st, _, doc, _ = svc.request("POST", "/api/login", {"name": "ann", "password": "wrong pass"})
    check(st == 401, "wrong password is 401: %s" % st)
    st, _, doc, _ = svc.request("POST", "/api/login", {"name": "nobody", "password": "x"})
    check(st == 401 and doc["error"] == "wrong name or password", "unknown name is 401 alike")

    st, _, doc, text = svc.request("POST", "/api/shifts", SHIFT, token=ann)
    check(st == 201 and doc["title"] == SHIFT["title"], "create shift: %s %s" % (st, text))
    ann_shift = doc["id"]
    evil = "x'); DROP TABLE shifts; -- \u00e9\u6f22"
    st, _, doc, _ = svc.request("POST", "/api/shifts", dict(SHIFT, title=evil), token=ann)
    check(st == 201 and doc["title"] == evil, "SQL-looking title stored verbatim")
    st, _, doc, _ = svc.request("GET", "/api/shifts/%d" % doc["id"], token=ann)
    check(st == 200 and doc["title"] == evil, "SQL-looking title read back verbatim")

    st, _, doc, _ = svc.request("GET", "/api/shifts/%d" % ann_shift, token=ann)
    check(st == 200 and doc["id"] == ann_shift, "own shift readable")
    st, _, doc, _ = svc.request("GET", "/api/shifts/%d" % ann_shift, token=bob)
    check(st == 404, "another user's shift is 404, not 403: %s" % st)
    st, _, _, _ = svc.request("DELETE", "/api/shifts/%d" % ann_shift, token=bob)
    check(st == 404, "another user's shift cannot be deleted: %s" % st)
    st, _, doc, _ = svc.request("GET", "/api/shifts", token=bob)
    check(st == 200 and doc["shifts"] == [], "bob sees none of ann's shifts")
    st, _, _, _ = svc.request("DELETE", "/api/shifts/%d" % ann_shift, token=ann)
    check(st == 204, "own shift deleted: %s" % st)
    st, _, _, _ = svc.request("GET", "/api/shifts/%d" % ann_shift, token=ann)
    check(st == 404, "deleted shift is gone")

    # paging: keyset, in id order, no duplicates, no gaps
    ids = set()
    for i in range(5):
        st, _, doc, _ = svc.request("POST", "/api/shifts", dict(SHIFT, title="p%d" % i), token=bob)
        ids.add(doc["id"])
    seen, after = [], None
    for _ in range(10):
        path = "/api/shifts?limit=2" + ("&after=%d" % after if after else "")
        st, _, doc, _ = svc.request("GET", path, token=bob)
        check(st == 200 and len(doc["shifts"]) <= 2, "page of at most 2")
        seen += [s["id"] for s in doc["shifts"]]
        after = doc["next"]
        if after is None:
            break
    check(seen == sorted(ids), "pages cover every shift once, in order: %s" % seen)
    return ann, bob


def names_exact(svc):
    """A name is what was registered, byte for byte, on every backend: a
    login as "CY" or "cy " is not cy's (on MariaDB the column's collation
    used to match them, case-, accent- and trailing-space-blind, so each
    spelling was a fresh account to the limits on guessing while reaching
    the same password: 10 more guesses a spelling), and "CY" can be
    registered beside "cy". From an address of its own, so its failures do
    not count against the other checks'."""
    pw = "correct horse"
    st, _, _, text = svc.request("POST", "/api/users", {"name": "cy", "password": pw})
    check(st == 201, "names: register cy: %s %s" % (st, text[:100]))
    for other in ("CY", "Cy", "cy ", "c\u00fd"):
        st, _, _, text = svc.request("POST", "/api/login", {"name": other, "password": pw},
                                     source="127.0.0.11")
        check(st == 401, "names: login as %r with cy's password is 401, not cy's: %s %s"
              % (other, st, text[:80]))
    st, _, _, text = svc.request("POST", "/api/users", {"name": "CY", "password": pw})
    check(st == 201, "names: CY is another name than cy: %s %s" % (st, text[:100]))


TOKENS_MAX = 64  # app.c: the tokens a user keeps stored


def tokens_per_user(svc):
    """A user keeps at most TOKENS_MAX tokens: a login past that signs the
    oldest out (they were kept without bound, and each login's cleanup
    scanned all of its user's tokens while holding the write lock). Two
    logins past the bound: exactly TOKENS_MAX of the tokens issued still
    work, the newest among them. From an address of its own, since the two
    tokens signed out count as guesses there."""
    src = "127.0.0.12"
    creds = {"name": "tia", "password": "correct horse"}
    st, _, _, text = svc.request("POST", "/api/users", creds, source=src)
    check(st == 201, "tokens: register tia: %s %s" % (st, text[:100]))
    issued = []
    for _ in range(TOKENS_MAX + 2):
        st, _, doc, text = svc.request("POST", "/api/login", creds, source=src)
        if not check(st == 200, "tokens: login: %s %s" % (st, text[:100])):
            return
        issued.append(doc["token"])
    working = []
    for tok in issued:
        st, _, _, text = svc.request("GET", "/api/shifts?limit=1", token=tok, source=src)
        check(st in (200, 401), "tokens: a token is 200 or 401: %s %s" % (st, text[:100]))
        working.append(st == 200)
    check(sum(working) == TOKENS_MAX and working[-1],
          "tokens: %d logins leave %d working tokens (wanted %d, the newest among them)"
          % (len(issued), sum(working), TOKENS_MAX))


def bad_input(svc, token):
    cases = [
        ("POST", "/api/users", b"{not json", None, 400, "malformed JSON"),
        ("POST", "/api/users", b"[1,2]", None, 400, "JSON object"),
        ("POST", "/api/users", b'{"name":"zed"}', None, 400, '"password" is missing'),
        ("POST", "/api/users", b'{"name":7,"password":"abcdefgh"}', None, 400, "must be a string"),
        ("POST", "/api/users", b'{"name":"zed","password":"short"}', None, 400, "8 to 1024"),
        ("POST", "/api/users", b'{"name":"","password":"abcdefghij"}', None, 400, "1 to 64"),
        ("POST", "/api/users", b'{"name":"a","name":"b","password":"abcdefghij"}', None, 400,
         "malformed JSON"),
        ("POST", "/api/users", b'{"name":"zed","password":"\xff\xfe abcdefgh"}', None, 400,
         "malformed JSON"),
        ("POST", "/api/users", b'{"name":"zed\\u0000x","password":"abcdefghij"}', None, 400,
         "malformed JSON"),
        ("POST", "/api/users", b'{"name":"z\\nd","password":"abcdefghij"}', None, 400,
         "control characters"),
        ("POST", "/api/users", b"", None, 400, "malformed JSON"),
        ("POST", "/api/users", b"x" * (64 * 1024), None, 413, "larger than"),
        ("POST", "/api/login", b'{"name":"zed"', None, 400, "malformed JSON"),
        ("POST", "/api/login", b'{"password":"abcdefghij"}', None, 400, '"name" is missing'),
        ("POST", "/api/shifts", b'{"title":"t","starts_at":"2026-11-24T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}',
         None, 401, "missing bearer"),
        ("POST", "/api/shifts", b'{"title":["t"],"starts_at":"2026-11-24T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, '"title" must be a string'),
        ("POST", "/api/shifts", b'{"title":"t","starts_at":"2026-11-24T09:00:00","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, "RFC 3339"),
        ("POST", "/api/shifts", b"{" + b'"title":"' + b"t" * (20 * 1024) + b'"}', token, 413,
         "larger than"),
        ("POST", "/api/shifts", json.dumps(SHIFT).encode(), None, 401, "missing bearer"),
        ("POST", "/api/shifts", json.dumps(SHIFT).encode(), "f" * 64, 401, "invalid or expired"),
        ("GET", "/api/shifts", None, "not-a-token", 401, "invalid or expired"),
        ("POST", "/api/shifts", b'{"title":"t","starts_at":"tomorrow","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, "RFC 3339"),
        ("POST", "/api/shifts", b'{"title":"t","starts_at":"2026-02-30T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, "RFC 3339"),
        ("POST", "/api/shifts", b'{"title":"t","starts_at":"2026-11-24T18:00:00Z","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, "end after"),
        ("POST", "/api/shifts", b'{"starts_at":"2026-11-24T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}',
         token, 400, '"title" is missing'),
        ("GET", "/api/shifts?limit=0", None, token, 400, "limit"),
        ("GET", "/api/shifts?limit=abc", None, token, 400, "limit"),
        ("GET", "/api/shifts?after=-1", None, token, 400, "after"),
        ("GET", "/api/nothing", None, None, 404, "no such route"),
        ("GET", "/api/shifts/", None, token, 404, "no such route"),
        ("GET", "/api/shifts/0", None, token, 404, "no such route"),
        ("DELETE", "/api/shifts/99999999", None, token, 404, "no shift"),
        ("DELETE", "/api/shifts/1", None, None, 401, "missing bearer"),
        ("GET", "/api/shifts/abc", None, token, 404, "no such route"),
        ("GET", "/api/shifts/99999999", None, token, 404, "no shift"),
        ("PUT", "/api/shifts", None, token, 405, "not allowed"),
        ("GET", "/api/users", None, None, 405, "not allowed"),
        ("DELETE", "/health", None, None, 405, "not allowed"),
    ]
    st, _, before, _ = svc.request("GET", "/api/shifts?limit=200", token=token)
    for method, path, raw, tok, want, msg in cases:
        headers = {"Content-Type": "application/json"} if raw is not None else {}
        st, r, doc, text = svc.request(method, path, raw=raw, token=tok, headers=headers)
        ok = st == want and doc is not None and msg in doc.get("error", "")
        check(ok, "%s %s -> %s %s (wanted %s with %r)" % (method, path, st, text[:120], want, msg))
        if want == 405:
            check(r.getheader("Allow"), "405 names the allowed methods")
        if want == 401:
            check((r.getheader("WWW-Authenticate") or "").startswith("Bearer"),
                  "401 names the scheme in WWW-Authenticate")
    st, _, after, _ = svc.request("GET", "/api/shifts?limit=200", token=token)
    check(before == after, "bad requests changed nothing")
    # an announced oversized body, from a client that waits for "100
    # Continue" as curl does: refused before a byte of it is sent
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=60)
    sock.sendall(b"POST /api/users HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 50000000\r\nExpect: 100-continue\r\n\r\n")
    answer = read_to_end(sock)  # the body never came: the service closes
    sock.close()
    check(answer.startswith(b"HTTP/1.1 413") and b"larger than" in answer,
          "oversized body refused before it is sent: %r" % answer[:80])
    target_checks(svc, token)
    # none of the refused registrations made a user
    st, _, doc, text = svc.request("POST", "/api/users", {"name": "zed", "password": "abcdefghij"})
    check(st == 201, "the name of refused registrations is still free: %s %s" % (st, text))


REGISTER_MAX = 64  # accounts one address may register an hour (shiftboard.h)


def registration_limit(svc):
    """One address registers at most REGISTER_MAX accounts an hour: the one
    past that is 429 with Retry-After and makes no account, while another
    address still registers and the limited one still logs in. (Nothing
    bounded it: one client could add users, and rows, without end.) A
    registration that makes no account (409) does not count."""
    src = "127.0.0.9"
    st, _, _, _ = svc.request("POST", "/api/users", {"name": "ann", "password": "whatever12"},
                              source=src)
    check(st == 409, "registration limit: a taken name is 409: %s" % st)
    made = 0
    for i in range(REGISTER_MAX):
        st, _, _, text = svc.request("POST", "/api/users",
                                     {"name": "reg%d" % i, "password": "correct horse"}, source=src)
        made += check(st == 201, "registration limit: account %d of %d from one address: %s %s"
                      % (i + 1, REGISTER_MAX, st, text[:100]))
    st, r, doc, text = svc.request("POST", "/api/users",
                                   {"name": "reg-past", "password": "correct horse"}, source=src)
    retry = r.getheader("Retry-After") or ""
    check(st == 429 and doc and "too many accounts" in doc.get("error", "") and
          retry.isdigit() and 0 < int(retry) <= 3600,
          "registration limit: account %d from one address is 429 JSON with Retry-After: %s %r %s"
          % (REGISTER_MAX + 1, st, retry, text[:120]))
    st, _, _, text = svc.request("POST", "/api/login",
                                 {"name": "reg-past", "password": "correct horse"}, source=src)
    check(st == 401, "registration limit: the refused account was not made: %s" % st)
    st, _, _, text = svc.request("POST", "/api/login",
                                 {"name": "reg0", "password": "correct horse"}, source=src)
    check(st == 200, "registration limit: the limited address still logs in: %s %s"
          % (st, text[:100]))
    st, _, _, text = svc.request("POST", "/api/users",
                                 {"name": "reg-other", "password": "correct horse"},
                                 source="127.0.0.10")
    check(st == 201, "registration limit: another address registers: %s %s" % (st, text[:100]))


def taken_costs_no_hash(svc):
    """Registering a name that is taken computes no password hash: the
    name is looked up first. (Each one cost an argon2id hash of 64 MiB before
    the insert failed, so a client could spend the server's hashing permits
    on names it knew were taken.) A new name still hashes once."""
    def hashes():
        _, _, _, text = svc.request("GET", "/metrics")
        return metric(text, "shiftboard_hashes_total")
    before = hashes()
    sts = [svc.request("POST", "/api/users", {"name": "ann", "password": "correct horse"},
                       source="127.0.0.11")[0] for _ in range(10)]
    after = hashes()
    check(before is not None and sts == [409] * 10 and after == before,
          "taken name: 10 registrations of a taken name are 409 and compute no hash "
          "(%s; hashes %s -> %s)" % (sts, before, after))
    st = svc.request("POST", "/api/users", {"name": "untaken", "password": "correct horse"},
                     source="127.0.0.11")[0]
    check(st == 201 and hashes() == after + 1,
          "taken name: a new name is 201 and hashes once (%s; hashes %s -> %s)"
          % (st, after, hashes()))


def concurrent_isolation(svc, users=32, seconds=5.0):
    """32 clients, each its own user, creating and listing shifts for a few
    seconds while probing each other's: every listing holds only the
    caller's shifts, every probe is 404."""
    tokens = {}
    for i in range(users):
        tokens["user%d" % i] = register_and_login(svc, "user%d" % i)
    names = sorted(tokens)
    created = {n: [] for n in names}
    lock = threading.Lock()
    errors = []
    deadline = time.monotonic() + seconds
    done = [0]

    def worker(k):
        name, other = names[k], names[(k + 1) % users]
        try:
            r = 0
            while time.monotonic() < deadline or r < 3:
                r += 1
                st, _, doc, _ = svc.request("POST", "/api/shifts",
                                            dict(SHIFT, title="%s/%d" % (name, r)),
                                            token=tokens[name])
                if st != 201:
                    errors.append("create %s" % st)
                    continue
                with lock:
                    created[name].append(doc["id"])
                    theirs = list(created[other])
                    done[0] += 1
                st, _, doc, _ = svc.request("GET", "/api/shifts?limit=200", token=tokens[name])
                if st != 200:
                    errors.append("list %s" % st)
                    continue
                for s in doc["shifts"]:
                    if not s["title"].startswith(name + "/"):
                        errors.append("%s saw %s" % (name, s["title"]))
                if theirs:
                    st, _, _, _ = svc.request("GET", "/api/shifts/%d" % theirs[-1],
                                              token=tokens[name])
                    if st != 404:
                        errors.append("%s read a shift of %s: %s" % (name, other, st))
        except Exception as e:  # a failed request must fail the test, not hang it
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(users)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("isolation: %d clients created %d shifts" % (users, done[0]), flush=True)
    check(not errors, "concurrent isolation: %d problems, first: %s" % (len(errors), errors[:3]))
    for n in names:
        ids = list_ids(svc, tokens[n])
        check(sorted(ids) == sorted(created[n]), "%s lists exactly their %d shifts" % (n, len(created[n])))
    return tokens


def shutdown_keeps_acknowledged(args, url, workdir):
    """SIGTERM in the middle of a stream of writes: every write answered
    201 is there after a restart."""
    svc = Service(args.binary, url, workdir)
    tokens = {n: register_and_login(svc, n) for n in ("dora", "emil", "fay", "gus")}
    acked = {n: [] for n in tokens}
    stop = threading.Event()

    def writer(name):
        r = 0
        while not stop.is_set():
            r += 1
            try:
                st, _, doc, _ = svc.request("POST", "/api/shifts",
                                            dict(SHIFT, title="%s/%d" % (name, r)),
                                            token=tokens[name])
            except (OSError, http.client.HTTPException):
                return  # the server went away: that write was never acknowledged
            if st == 201:
                acked[name].append(doc["id"])

    ts = [threading.Thread(target=writer, args=(n,)) for n in tokens]
    for t in ts:
        t.start()
    while sum(len(v) for v in acked.values()) < 40:
        time.sleep(0.01)
    code = svc.stop()
    stop.set()
    for t in ts:
        t.join()
    check(code == 0, "SIGTERM under load: exit 0 (got %s)" % code)
    svc = Service(args.binary, url, workdir)
    for n, tok in tokens.items():
        ids = set(list_ids(svc, tok))
        lost = [i for i in acked[n] if i not in ids]
        check(not lost, "%s: %d acknowledged writes, %d lost" % (n, len(acked[n]), len(lost)))
    check(svc.stop() == 0, "SIGTERM after the restart: exit 0")


def read_head(sock):
    """Bytes up to the end of one response head (the blank line)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_to_end(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def shutdown_finishes_in_flight(args, url, workdir):
    """A request the service has started when SIGTERM arrives is finished
    and answered before the process exits 0, while new connections are
    already refused. Made deterministic with Expect: 100-continue: the
    service answers "100 Continue" only once it has taken the request up
    (libmicrohttpd calls the handler first), and gets the body only after
    it has stopped accepting."""
    svc = Service(args.binary, url, workdir)
    tok = register_and_login(svc, "hal")
    body = json.dumps(dict(SHIFT, title="in flight at SIGTERM")).encode()
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=60)
    sock.sendall(("POST /api/shifts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                  "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (tok, len(body))).encode())
    interim = read_head(sock)
    check(interim.startswith(b"HTTP/1.1 100"), "100 Continue before the body: %r" % interim[:40])
    svc.proc.send_signal(signal.SIGTERM)
    refused = False
    for _ in range(2400):
        try:
            socket.create_connection(("127.0.0.1", svc.port), timeout=10).close()
        except (ConnectionRefusedError, ConnectionResetError):
            # refused, or reset: caught in the backlog when it was closed
            refused = True
            break
        time.sleep(0.05)
    check(refused, "stopped accepting after SIGTERM")
    sock.sendall(body)
    try:
        response = read_to_end(sock)  # the answer says Connection: close
    except OSError as e:
        response = b""
        check(False, "in-flight request answered, not cut: %r" % e)
    sock.close()
    head, _, payload = response.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 201"), "in-flight request answered 201: %r" % head[:60])
    check(b"connection: close" in head.lower(), "answers during shutdown say Connection: close")
    shift_id = json.loads(payload)["id"] if head.startswith(b"HTTP/1.1 201") else None
    code = svc.wait()
    check(code == 0, "exit 0 after finishing the in-flight request (got %s)" % code)
    svc = Service(args.binary, url, workdir)
    if shift_id is not None:
        st, _, doc, _ = svc.request("GET", "/api/shifts/%d" % shift_id, token=tok)
        check(st == 200 and doc["title"] == "in flight at SIGTERM", "the in-flight write is there")
    check(svc.stop() == 0, "SIGTERM after the restart: exit 0")


def observability(svc):
    st, r, _, text = svc.request("GET", "/metrics")
    check(st == 200 and r.getheader("Content-Type").startswith("text/plain"), "metrics served")
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+Inf-]+$')
    bad = [l for l in text.splitlines() if l and not l.startswith("#") and not sample.match(l)]
    check(not bad, "metrics lines parse: %s" % bad[:3])
    check('dbscope_connections{pool="shiftboard",target="primary",state="in_use"}' in text, "pool gauge present")
    st, _, doc, _ = svc.request("GET", "/api/pool")
    check(st == 200 and doc["pool"] == "shiftboard" and "p99" in doc["wait_us"], "pool JSON")
    check(doc["acquired"] == doc["released"] + doc["in_use"], "every session given back")
    st, r, _, text = svc.request("GET", "/")
    check(st == 200 and "<svg" in text and "/api/pool" in text and "http" not in
          re.sub(r'xmlns="[^"]*"', "", text).replace("http-equiv", ""),
          "dashboard served, nothing fetched from elsewhere")


def metric(text, name, labels=""):
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else None


def dashboard_in_browser(svc, artifacts, tag):
    """The dashboard in headless Chromium: the page's script fetches the
    stats and fills in the numbers, which must match /metrics; a screenshot
    is kept as a test artifact."""
    chromium = "/usr/bin/chromium"
    if not check(os.access(chromium, os.X_OK), "chromium installed (scripts/packages/shiftboard.txt)"):
        return
    url = "http://127.0.0.1:%d/" % svc.port
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=3000"]
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=180).stdout
    shown = dict(re.findall(r'<div class="v" id="(\w+)">([^<]*)</div>', dom))
    _, _, _, text = svc.request("GET", "/metrics")
    pool = '{pool="shiftboard",target="primary"}'
    want = {
        "max_size": metric(text, "dbscope_connections_max", pool),
        "size": (metric(text, "dbscope_connections", '{pool="shiftboard",target="primary",state="idle"}') or 0) +
                (metric(text, "dbscope_connections", '{pool="shiftboard",target="primary",state="in_use"}') or 0),
        "in_use": metric(text, "dbscope_connections", '{pool="shiftboard",target="primary",state="in_use"}'),
        "waiting": metric(text, "dbscope_waiting_threads", pool),
        "timeouts": metric(text, "dbscope_acquire_timeouts_total", pool),
        "leaks": metric(text, "dbscope_leaks_total", pool),
    }
    for key, value in want.items():
        got = shown.get(key)
        check(got is not None and value is not None and float(got) == value,
              "dashboard shows %s = %s, /metrics says %s" % (key, got, value))
    check('id="status" class="">live' in dom, "dashboard reached the server")
    if artifacts:
        os.makedirs(artifacts, exist_ok=True)
        png = os.path.join(artifacts, "shiftboard-dashboard-%s.png" % tag)
        subprocess.run(flags + ["--window-size=1100,800", "--screenshot=" + png, url],
                       capture_output=True, timeout=180)
        check(os.path.getsize(png) > 1000 if os.path.exists(png) else False,
              "dashboard screenshot written to " + png)


def request_logs(svc, expected):
    lines = [l for l in svc.log().splitlines() if "msg=request" in l]
    print("%d requests served and logged" % len(lines), flush=True)
    check(len(lines) >= expected, "a log line per request (%d >= %d)" % (len(lines), expected))
    pat = re.compile(r"request_id=\S+ user_id=\S+ method=\S+ path=\"[^\"]*\" status=\d+ duration_ms=[0-9.]+")
    check(all(pat.search(l) for l in lines), "log lines carry request id, user, status, duration")
    check(any(re.search(r"user_id=\d+ .*status=201", l) for l in lines), "user id logged")


def psql(url, sql):
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit("psql failed: %s" % out.stderr)
    return out.stdout.strip().splitlines()


def replay_resume(standby):
    """Resumes the standby's replay. The statement that resumes it can be
    cancelled itself ("conflict with recovery"): replay, let go, at once
    removes row versions its snapshot might need, once the pause outlasted
    max_standby_streaming_delay. So it is retried until the standby says
    replay is no longer paused."""
    for _ in range(50):
        for sql in ("SELECT pg_wal_replay_resume()", "SELECT pg_is_wal_replay_paused()"):
            out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
                                  standby, "-c", sql], capture_output=True, text=True, timeout=60)
        if out.returncode == 0 and out.stdout.strip() == "f":
            return
        time.sleep(0.1)
    raise SystemExit("the standby's replay could not be resumed: %s" % out.stderr)


def rls(url, svc, tokens, probe):
    """Row-level security, two ways. psql as the application's role (the
    table's owner: FORCE ROW LEVEL SECURITY makes the policy bind it too),
    with the setting made by hand; then rls_probe.c, through dbscope with
    the service's configuration, many users on few connections. Every query
    has no WHERE clause; each user must see exactly what the API lists."""
    ann, bob = USER_IDS["ann"], USER_IDS["bob"]
    owners = psql(url, "SET app.user_id = '%d'; SELECT DISTINCT user_id FROM shifts" % ann)
    check(owners == [str(ann)], "RLS: ann sees only her rows: %s" % owners)
    rows = psql(url, "SELECT count(*) FROM shifts")
    check(rows == ["0"], "RLS: no context, no rows: %s" % rows)
    rows = psql(url, "BEGIN; SELECT set_config('app.user_id', '%d', true); "
                     "SELECT count(*) FROM shifts; COMMIT; SELECT count(*) FROM shifts" % bob)
    check(rows[-1] == "0" and rows[-2] == str(len(list_ids(svc, tokens["bob"]))),
          "RLS: a transaction-local user sees their rows, and nothing after commit: %s" % rows)
    err = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
                          "SET app.user_id = '%d'; INSERT INTO shifts (user_id, title, starts_at, "
                          "ends_at, starts_epoch, ends_epoch, created_at) "
                          "VALUES (%d, 'forged', 'a', 'b', 0, 1, 0)" % (ann, bob)],
                         capture_output=True, text=True, timeout=60)
    check(err.returncode != 0 and "row-level security" in err.stderr,
          "RLS: cannot write a row for another user")

    if not probe:
        return
    out = subprocess.run([probe, url] + [str(USER_IDS[n]) for n in tokens],
                         capture_output=True, text=True, timeout=300)
    print(out.stdout.splitlines()[-3:] if out.stdout else out.stderr, flush=True)
    check(out.returncode == 0, "rls_probe passed: %s" % out.stderr[-300:])
    seen = {}
    for line in out.stdout.splitlines():
        f = line.split()
        if f[0] == "user":
            seen[int(f[1])] = (int(f[3]), int(f[5]), int(f[7]), sorted(int(x) for x in f[9:]))
    for name, tok in tokens.items():
        uid = USER_IDS[name]
        reads, foreign, unstable, ids = seen.get(uid, (0, -1, -1, None))
        check(reads > 0 and foreign == 0 and unstable == 0 and ids == sorted(list_ids(svc, tok)),
              "RLS through dbscope: %s (%d) saw exactly their own %s shifts in %d reads "
              "(foreign %d)" % (name, uid, len(ids or []), reads, foreign))


def main_api(args, url, workdir):
    svc = Service(args.binary, url, workdir)
    try:
        ann, bob = api_flow(svc)
        names_exact(svc)
        tokens_per_user(svc)
        bad_input(svc, ann)
        registration_limit(svc)
        taken_costs_no_hash(svc)
        patch_shifts(svc, ann, bob)
        tokens = concurrent_isolation(svc)
        observability(svc)
        dashboard_in_browser(svc, args.artifacts, args.backend)
        request_logs(svc, 100)
        if args.backend == "pg":
            tokens.update(ann=ann, bob=bob)
            rls(url, svc, tokens, args.rls_probe)
            invalidations_logged(svc, args, url, ann)
    finally:
        code = svc.stop()
    check(code == 0, "SIGTERM: exit 0 (got %s)" % code)
    check("stopped" in svc.log() and "0 still out" in svc.log(), "shutdown closed the pool cleanly")
    # a second start on the same database: the schema is already there
    svc = Service(args.binary, url, workdir)
    st, _, doc, _ = svc.request("POST", "/api/login", {"name": "ann", "password": "correct horse"})
    check(st == 200, "restart keeps users (schema migration is idempotent)")
    check(svc.stop() == 0, "second SIGTERM: exit 0")
    shutdown_keeps_acknowledged(args, url, workdir)
    shutdown_finishes_in_flight(args, url, workdir)
    ready_and_timeouts(args, url, workdir)
    if args.backend == "sqlite":
        replica_settings(args, workdir)
        locked_file(args, workdir)


def locked_file(args, workdir):
    """Another process holds the SQLite file's write lock: a write is 503
    with Retry-After within a bound (each wait for the lock is
    busy_timeout_ms, 1 s here, and a unit tries 4 times; it was 5 s a try,
    20 s holding a handler slot), /health says degraded with code "locked"
    rather than ok, reads still work; once the lock is gone, writes are 201
    and /health ok again."""
    import sqlite3
    path = os.path.join(workdir, "locked.db")
    svc = Service(args.binary, "sqlite:" + path, workdir)
    holder = None
    try:
        tok = register_and_login(svc, "lou")
        holder = sqlite3.connect(path, isolation_level=None, timeout=60)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO schema_version (version) VALUES (0)")
        t0 = time.monotonic()
        st, r, doc, text = svc.request("POST", "/api/shifts", SHIFT, token=tok)
        took = time.monotonic() - t0
        print("locked: a write on the locked file: %s after %.1f s" % (st, took), flush=True)
        check(st == 503 and (r.getheader("Retry-After") or "").isdigit() and doc and
              "error" in doc, "locked: a write is 503 with Retry-After: %s %s" % (st, text[:120]))
        check(took < 15, "locked: the write gave up within its bound (4 waits of 1 s), "
              "not 20 s: %.1f s" % took)
        st, r, doc, text = svc.request("GET", "/health")
        check(st == 503 and r.getheader("Retry-After") and doc and
              doc.get("status") == "degraded" and doc.get("code") == "locked",
              "locked: /health says degraded (locked) while writes fail: %s %s" % (st, text[:160]))
        st, _, _, text = svc.request("GET", "/api/shifts", token=tok)
        check(st == 200, "locked: reads still work: %s %s" % (st, text[:120]))
        # More writes than handler slots (--threads 8) while the lock is
        # known: one waits for the lock, the rest are refused at once, so a
        # read still finds a slot (each write waiting it out held a slot
        # about 4 s, and the read got 503 after its 2 s wait for one).
        writes = []

        def write():
            writes.append(svc.request("POST", "/api/shifts", SHIFT, token=tok, timeout=120)[0])

        writers = [threading.Thread(target=write) for _ in range(10)]
        for t in writers:
            t.start()
        time.sleep(0.5)
        st, _, _, text = svc.request("GET", "/api/shifts", token=tok)
        for t in writers:
            t.join()
        check(st == 200, "locked: a read while 10 writes wait for the lock: %s %s"
              % (st, text[:120]))
        check(writes == [503] * 10, "locked: the 10 writes are 503: %s" % writes)
        holder.execute("ROLLBACK")
        st, _, _, text = svc.request("POST", "/api/shifts", SHIFT, token=tok)
        check(st == 201, "locked: a write once the lock is gone: %s %s" % (st, text[:120]))
        st = health_soon(svc)
        check(st == 200, "locked: /health ok again after a write: %s" % st)
    finally:
        if holder:
            holder.close()
        code = svc.stop()
    check(code == 0, "locked: SIGTERM: exit 0 (got %s)" % code)


def ready_and_timeouts(args, url, workdir):
    """Ready means the pool holds DB_POOL_MIN_IDLE connections: they are
    open when the banner is printed, before the first request. The
    timeouts are read by the library: a bad one stops the start with a
    message naming the variable."""
    svc = Service(args.binary, url, workdir, env_extra={"DB_POOL_MIN_IDLE": "3"})
    try:
        st, _, doc, _ = svc.request("GET", "/api/pool")
        check(st == 200 and doc["size"] >= 3,
              "DB_POOL_MIN_IDLE=3: 3 connections open once listening (got %s)"
              % (doc and doc["size"]))
    finally:
        check(svc.stop() == 0, "DB_POOL_MIN_IDLE=3 starts and stops")
    for var, bad in (("DB_STATEMENT_TIMEOUT_MS", "nonsense"), ("DB_CONNECT_TIMEOUT_MS", "-1"),
                     ("DB_POOL_MIN_IDLE", "many")):
        env = dict(os.environ, DATABASE_URL=url, SHIFTBOARD_PWHASH="min")
        env.update(SERVICE_ENV)
        env[var] = bad
        out = subprocess.run([args.binary, "--listen", "127.0.0.1:%d" % free_port()], env=env,
                             cwd=workdir, capture_output=True, text=True, timeout=60)
        check(out.returncode == 2 and var in out.stderr and "listening" not in out.stdout,
              "%s=%r refused, naming the variable: %s %r"
              % (var, bad, out.returncode, out.stderr[-200:]))


def replica_settings(args, workdir):
    """DB_REPLICA_MAX_LAG_MS: a bad value stops the start with a message
    naming the variable; a good one starts the service."""
    url = "sqlite:" + os.path.join(workdir, "lag.db")
    for bad in ("abc", "0", "-5", "60001", "12ms", ""):
        env = dict(os.environ, DATABASE_URL=url, DB_REPLICA_MAX_LAG_MS=bad,
                   SHIFTBOARD_PWHASH="min")
        out = subprocess.run([args.binary, "--listen", "127.0.0.1:%d" % free_port()], env=env,
                             cwd=workdir, capture_output=True, text=True, timeout=60)
        check(out.returncode == 2 and "DB_REPLICA_MAX_LAG_MS" in out.stderr and
              "1 to 60000" in out.stderr,
              "DB_REPLICA_MAX_LAG_MS=%r refused, naming the variable: %s %r"
              % (bad, out.returncode, out.stderr[-200:]))
    svc = Service(args.binary, url, workdir, env_extra={"DB_REPLICA_MAX_LAG_MS": "250"})
    check(svc.stop() == 0, "DB_REPLICA_MAX_LAG_MS=250 starts and stops")


def own_database(url_file, super_url_file):
    """A database of our own on the shared server, owned by the test role
    (not a superuser, so row-level security applies to it): the other
    PostgreSQL tests run at the same time in the default one."""
    url = open(url_file).read().strip()
    super_url = open(super_url_file).read().strip()
    name = "shiftboard_%d_%s" % (os.getpid(), secrets.token_hex(4))
    owner = urllib.parse.urlsplit(url).username
    psql(super_url, 'CREATE DATABASE "%s" OWNER "%s"' % (name, owner))
    parts = urllib.parse.urlsplit(url)
    return parts._replace(path="/" + name).geturl(), super_url, name


def as_postgres(cmd):
    if os.getuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def outage(args, workdir):
    d = args.pg_dir
    subprocess.run(["sh", args.pg_server, "start", d], check=True, capture_output=True)
    try:
        url = open(os.path.join(d, "url")).read().strip()
        pg_ctl = open(os.path.join(d, "pg_ctl")).read().strip()
        svc = Service(args.binary, url, workdir)
        try:
            tok = register_and_login(svc, "carol")
            st, _, _, _ = svc.request("GET", "/health")
            check(st == 200, "health 200 while the database is up")
            # clients keep working through the outage: every answer must be
            # a status (503 while down), never a hang or a dropped connection
            statuses, problems, stop = [], [], threading.Event()
            recovered = threading.Event()
            after = [[] for _ in range(4)]  # each client's answers once /health is 200 again

            def client(k):
                while not stop.is_set():
                    try:
                        st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok)
                    except Exception as e:
                        problems.append(repr(e))
                        return
                    statuses.append(st)
                    if recovered.is_set():
                        after[k].append(st)

            clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
            for t in clients:
                t.start()
            time.sleep(0.5)
            as_postgres([pg_ctl, "-D", os.path.join(d, "data"), "-m", "fast", "-w", "stop"])
            st, r = None, None
            for _ in range(120):
                st, r, doc, _ = svc.request("GET", "/health")
                if st == 503:
                    break
                time.sleep(0.25)
            check(st == 503 and r.getheader("Retry-After"), "health 503 with Retry-After when down")
            # "code" names the failure as /api/pool's errors_by classes do
            # (it was dbs_strerror's sentence, cut at 31 bytes: "database
            # unavailable: failing f")
            check(doc and doc.get("code") in ("connect", "unavailable", "timeout", "closed"),
                  "health's code while down is a short class name: %r" % (doc and doc.get("code")))
            st, r, doc, _ = svc.request("GET", "/api/shifts", token=tok)
            check(st == 503 and doc and "unavailable" in doc["error"], "API 503 when down: %s" % st)
            out = as_postgres([pg_ctl, "-D", os.path.join(d, "data"), "-l",
                               os.path.join(d, "data", "server.out"), "-w", "start"])
            check(out.returncode == 0, "server restarted: %s" % out.stderr)
            for _ in range(240):
                st, _, _, _ = svc.request("GET", "/health")
                if st == 200:
                    break
                time.sleep(0.25)
            check(st == 200, "health back to 200 by itself")
            # a request begun before the recovery may still end in 503: wait
            # until every client has had a few answers begun after it
            recovered.set()
            for _ in range(2400):
                if all(len(a) >= 3 for a in after) or not any(t.is_alive() for t in clients):
                    break
                time.sleep(0.05)
            stop.set()
            for t in clients:
                t.join()
            check(not problems, "no hang or dropped connection during the outage: %s" % problems[:2])
            check(set(statuses) <= {201, 503} and 503 in statuses,
                  "writes answered 201 or 503 through the outage: %s" % sorted(set(statuses)))
            check(all(a and a[-1] == 201 for a in after),
                  "every client's writes succeed again after the recovery: %s" % after)
            st, _, _, text = svc.request("POST", "/api/shifts", SHIFT, token=tok)
            check(st == 201, "API works again: %s %s" % (st, text))
        finally:
            check(svc.stop() == 0, "SIGTERM after the outage: exit 0")
    finally:
        subprocess.run(["sh", args.pg_server, "stop", d], capture_output=True)


def patch_shifts(svc, ann, bob):
    """PATCH /api/shifts/{id}: any of title, starts_at, ends_at, checked
    like a create on the merged shift; refused changes change nothing;
    another user's shift is 404 (on PostgreSQL, row-level security hides
    it as well)."""
    st, _, doc, text = svc.request("POST", "/api/shifts", SHIFT, token=ann)
    if not check(st == 201, "create a shift to patch: %s %s" % (st, text)):
        return
    sid = doc["id"]
    path = "/api/shifts/%d" % sid
    want = dict(SHIFT, id=sid)

    st, _, doc, text = svc.request("PATCH", path, {"title": "Back office"}, token=ann)
    want["title"] = "Back office"
    check(st == 200 and doc == want, "PATCH title: 200 and the whole updated shift: %s %s" % (st, text))
    st, _, doc, _ = svc.request("PATCH", path, {"ends_at": "2026-11-24T18:30:00+01:00"}, token=ann)
    want["ends_at"] = "2026-11-24T18:30:00+01:00"
    check(st == 200 and doc == want, "PATCH ends_at alone (an offset): 200: %s" % doc)
    moved = {"starts_at": "2026-11-25T08:00:00Z", "ends_at": "2026-11-25T12:00:00Z"}
    st, _, doc, _ = svc.request("PATCH", path, moved, token=ann)
    want.update(moved)
    check(st == 200 and doc == want, "PATCH both times (the shift moved a day): 200: %s" % doc)
    st, _, doc, _ = svc.request("GET", path, token=ann)
    check(st == 200 and doc == want, "GET after PATCH shows the change: %s" % doc)

    bad = [
        # merged with the stored times: start 08:00, end 12:00 on the 25th
        ({"starts_at": "2026-11-25T12:00:00Z"}, 400, "end after it starts"),
        ({"starts_at": "2026-11-26T09:00:00Z"}, 400, "end after it starts"),
        ({"ends_at": "2026-11-25T07:59:59Z"}, 400, "end after it starts"),
        ({"starts_at": "2026-11-25T13:00:00Z", "ends_at": "2026-11-25T13:00:00Z"}, 400,
         "end after it starts"),
        ({"title": 5}, 400, "must be a string"),
        ({"title": None}, 400, "must be a string"),
        ({"title": ""}, 400, "bytes long"),
        ({"title": "x" * 201}, 400, "bytes long"),
        ({"starts_at": "tomorrow"}, 400, "RFC 3339"),
        ({"ends_at": 1764061200}, 400, "must be a string"),
        ({}, 400, "nothing to change"),
        ({"titel": "typo"}, 400, "unknown field \"titel\""),
        ({"title": "half", "start_at": "2026-11-25T09:00:00Z"}, 400, "unknown field"),
        ({"title": "half", "owner": 2}, 400, "unknown field"),
    ]
    for body, status, msg in bad:
        st, _, doc, text = svc.request("PATCH", path, body, token=ann)
        check(st == status and doc is not None and msg in doc.get("error", ""),
              "PATCH %s -> %s %s (wanted %s with %r)" % (body, st, text[:120], status, msg))
    for raw, msg in ((b"", "malformed JSON"), (b"[]", "must be a JSON object"),
                     (b'{"title": "a", "title": "b"}', "malformed JSON")):
        st, _, doc, text = svc.request("PATCH", path, raw=raw, token=ann,
                                       headers={"Content-Type": "application/json"})
        check(st == 400 and doc is not None and msg in doc.get("error", ""),
              "PATCH with body %r -> %s %s (wanted 400)" % (raw, st, text[:120]))
    st, _, doc, _ = svc.request("PATCH", path, {"title": "stolen"}, token=bob)
    check(st == 404, "another user's shift cannot be patched: %s" % st)
    st, _, doc, _ = svc.request("PATCH", path, {"title": "no token"})
    check(st == 401, "PATCH without a token is 401: %s" % st)
    st, _, doc, _ = svc.request("PATCH", "/api/shifts/999999999", {"title": "x"}, token=ann)
    check(st == 404, "PATCH of a missing shift is 404: %s" % st)
    st, _, doc, _ = svc.request("GET", path, token=ann)
    check(st == 200 and doc == want, "refused PATCHes changed nothing: %s" % doc)
    st, r, _, _ = svc.request("PUT", path, {"title": "x"}, token=ann)
    check(st == 405 and "PATCH" in (r.getheader("Allow") or ""), "405 on PUT names PATCH in Allow")
    st, r, _, _ = svc.request("PATCH", "/api/shifts", {"title": "x"}, token=ann)
    check(st == 405, "PATCH on the collection is 405: %s" % st)

    # many PATCHes of one shift at once, each moving one end: the merged
    # check holds against what the others committed, so the shift never
    # ends up backwards
    errors = []

    def mover(k):
        for i in range(15):
            body = ({"starts_at": "2026-11-25T%02d:00:00Z" % (6 + (i + k) % 6)} if k % 2 else
                    {"ends_at": "2026-11-25T%02d:00:00Z" % (7 + (i * 3 + k) % 8)})
            try:
                st, _, _, text = svc.request("PATCH", path, body, token=ann)
            except Exception as e:
                errors.append(repr(e))
                return
            if st not in (200, 400):
                errors.append("%s %s" % (st, text[:80]))

    ts = [threading.Thread(target=mover, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "concurrent PATCHes answered 200 or 400: %s" % errors[:3])
    st, _, doc, _ = svc.request("GET", path, token=ann)
    check(st == 200 and doc["ends_at"] > doc["starts_at"],
          "after concurrent PATCHes the shift still ends after it starts: %s" % doc)


def invalidations_logged(svc, args, url, token):
    """dbscope's events reach the service's log through its on_event, as
    the library's own logger printed them: every server process of the
    service's connections is killed, and the connections found dead are
    logged as event=invalidate lines."""
    super_url = open(args.super_url_file).read().strip()
    db = urllib.parse.urlsplit(url).path.lstrip("/")
    killed = psql(super_url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE datname = '%s' AND pid <> pg_backend_pid()" % db)
    check(killed and int(killed[0]) > 0, "killed the service's connections: %s" % killed)
    # every pooled connection is dead: enough requests at once reach them all
    statuses = []

    def client():
        for _ in range(10):
            st, _, _, _ = svc.request("GET", "/api/shifts", token=token)
            statuses.append(st)

    ts = [threading.Thread(target=client) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(set(statuses) <= {200, 503} and 200 in statuses,
          "requests after the kill answered 200 (or 503): %s" % sorted(set(statuses)))
    lines = [l for l in svc.log().splitlines() if "msg=dbscope event=invalidate" in l]
    check(lines and all(re.match(r"time=\S+ level=info msg=dbscope event=invalidate request_id=\S+ "
                                 r"user_id=\S+ conn=\d+ ", l) for l in lines),
          "dead connections logged as logfmt event=invalidate lines: %s" % lines[:2])


def notices_logged(args, url, workdir):
    """The database's notices (a first start runs DROP POLICY IF EXISTS,
    and PostgreSQL answers with a NOTICE) reach shiftboard's log as logfmt
    lines, never raw on stderr. Needs the PostgreSQL driver to deliver
    notices as DBS_EVENT_NOTICE. A later start on the same database finds
    its schema in the catalog and runs nothing that the server answers
    with a notice: its log holds none."""
    for start in ("first", "second"):
        svc = Service(args.binary, url, workdir)
        st, _, _, _ = svc.request("GET", "/health")
        check(st == 200, "health on the %s start" % start)
        check(svc.stop() == 0, "SIGTERM after the %s start: exit 0" % start)
        lines = svc.log().splitlines()
        raw = [l for l in lines if l.startswith(("NOTICE:", "WARNING:"))]
        check(not raw, "%s start: no raw notice on stderr: %s" % (start, raw[:2]))
        if start == "second":
            notices = [l for l in lines if "event=notice" in l]
            check(not notices, "second start: no notice from the database: %s" % notices[:2])
            continue
        logged = [l for l in lines if re.match(
            r'time=\S+ level=(info|warn) msg=dbscope event=notice .*reason="(?:[^"\\]|\\.)*skipping"$', l)]
        check(logged, "%s start: the server's notices logged as logfmt lines" % start)
        print("notices logged on the %s start: %s" % (start, logged[:1]), flush=True)


def bypassrls_refused(args, super_url, workdir):
    """As a superuser or a BYPASSRLS role, row-level security protects
    nothing: shiftboard refuses to start, before it creates anything,
    unless told to go ahead (--allow-bypassrls, SHIFTBOARD_ALLOW_BYPASSRLS=1),
    and then it logs a warning."""
    tag = "%d_%s" % (os.getpid(), secrets.token_hex(4))
    role, db, pw = "sb_bypass_" + tag, "shiftboard_bypass_" + tag, "pw-" + secrets.token_hex(8)
    psql(super_url, "CREATE ROLE %s LOGIN BYPASSRLS PASSWORD '%s'" % (role, pw))
    try:
        psql(super_url, 'CREATE DATABASE "%s" OWNER %s' % (db, role))
        parts = urllib.parse.urlsplit(super_url)
        su = parts._replace(path="/" + db).geturl()
        by = parts._replace(path="/" + db, netloc="%s:%s@%s:%d" % (
            role, pw, parts.hostname, parts.port)).geturl()
        env = dict(os.environ, SHIFTBOARD_PWHASH="min")
        env.pop("SHIFTBOARD_ALLOW_BYPASSRLS", None)
        for who, url in (("a superuser", su), ("a BYPASSRLS role", by)):
            out = subprocess.run([args.binary, "--listen", "127.0.0.1:%d" % free_port()],
                                 env=dict(env, DATABASE_URL=url), capture_output=True,
                                 text=True, timeout=120)
            check(out.returncode == 1 and "listening" not in out.stdout and
                  "refusing to start" in out.stderr and "BYPASSRLS" in out.stderr and
                  "--allow-bypassrls" in out.stderr,
                  "as %s: refuses to start, saying why: %s %r" % (who, out.returncode,
                                                                   out.stderr[-400:]))
            check(pw not in out.stderr and parts.password not in out.stderr,
                  "as %s: no password in the message" % who)
        tables = psql(su, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        check(tables == ["0"], "refused before creating anything: %s tables" % tables)
        for who, url, extra_args, extra_env in (
                ("a BYPASSRLS role", by, (), {"SHIFTBOARD_ALLOW_BYPASSRLS": "1"}),
                ("a superuser", su, ("--allow-bypassrls",), {})):
            svc = Service(args.binary, url, workdir, extra_args, extra_env)
            st, _, _, _ = svc.request("GET", "/health")
            check(st == 200, "as %s, allowed: it runs" % who)
            check(svc.stop() == 0, "as %s, allowed: SIGTERM exits 0" % who)
            warned = [l for l in svc.log().splitlines()
                      if l.startswith("level=warn") and "ROW-LEVEL SECURITY IS BYPASSED" in l]
            check(warned, "as %s, allowed: a loud warning in the log" % who)
    finally:
        psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % db)
        psql(super_url, "DROP ROLE IF EXISTS %s" % role)
def raw_exchange(port, data, timeout=60, source=None):
    """Sends data on a fresh connection and reads until the service closes
    it; returns what came back (b"" for a reset)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)
    try:
        sock.sendall(data)
        return read_to_end(sock)
    except ConnectionResetError:
        return b""
    finally:
        sock.close()


def target_checks(svc, token):
    """What the HTTP layer refuses before any route: a target that %00 would
    cut short, too long a target, too many query arguments, a body far over
    the limit sent without waiting for 100 Continue; and HEAD answered like
    GET without a body. Every refusal is the API's JSON."""
    for path in ("/api/shifts/1%00", "/api/shifts/1%00junk", "/api/shifts?after=1%00"):
        st, _, doc, text = svc.request("GET", path, token=token)
        check(st == 400 and doc and "NUL" in doc["error"],
              "%s is refused, not cut short: %s %s" % (path, st, text[:100]))
    st, _, doc, text = svc.request("GET", "/api/" + "x" * 9000, token=token)
    check(st == 414 and doc and "8192" in doc["error"], "9000-byte target: 414 JSON: %s" % st)
    for n in (500, 3000):
        query = "&".join("a%d=1" % i for i in range(n))
        st, _, doc, text = svc.request("GET", "/api/shifts?" + query, token=token)
        check(st == 400 and doc and "query arguments" in doc["error"],
              "%d query arguments: 400 JSON: %s %s" % (n, st, text[:100]))
    st, _, doc, _ = svc.request("GET", "/api/shifts?limit=2&after=0", token=token)
    check(st == 200, "a few query arguments still fine: %s" % st)
    # fewer arguments than are refused on sight but long ones, the target
    # near libmicrohttpd's memory: answered 414 like any long target (its
    # arguments did not fit there and the connection closed unanswered)
    for n, size in ((30, 64000), (120, 60000), (255, 52000)):
        query = b"&".join(b"a%d=%s" % (i, b"v" * (size // n)) for i in range(n))
        answer = raw_exchange(svc.port, b"GET /api/shifts?" + query +
                              b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        check(answer.startswith(b"HTTP/1.1 414") and b"8192" in answer and b'{"error"' in answer,
              "a %d-byte target of %d arguments: 414 JSON: %r" % (len(query), n, answer[:80]))
    # 10 MB without Expect: read, thrown away, then a JSON 413 and a clean close
    st, r, doc, text = svc.request("POST", "/api/users", raw=b"x" * (10 * 1024 * 1024),
                                   headers={"Content-Type": "application/json"})
    check(st == 413 and doc and "larger than" in doc["error"] and
          (r.getheader("Connection") or "").lower() == "close",
          "10 MB body: 413 JSON with Connection: close: %s %s" % (st, text[:100]))
    # the largest body still read and answered (16 KiB plus the 32 MiB
    # thrown away), sent whole before reading: a 413, not a cut
    n = 16 * 1024 + 32 * 1024 * 1024
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=60)
    try:
        sock.sendall(b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % n)
        chunk = b"x" * (1024 * 1024)
        for _ in range(n // len(chunk)):
            sock.sendall(chunk)
        sock.sendall(b"x" * (n % len(chunk)))
        answer = read_to_end(sock)
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    finally:
        sock.close()
    check(answer.startswith(b"HTTP/1.1 413") and b"larger than" in answer,
          "a body of 16 KiB + 32 MiB, the most read and thrown away: 413: %r" % answer[:60])
    # HEAD: GET's status and headers, no body
    for path, tok, want in (("/health", None, 200), ("/api/shifts", token, 200),
                            ("/api/shifts", None, 401), ("/api/users", None, 405)):
        get_st, get_r, _, _ = svc.request("GET", path, token=tok)
        st, r, _, text = svc.request("HEAD", path, token=tok)
        check(st == want == get_st and text == "" and
              r.getheader("Content-Type") == get_r.getheader("Content-Type"),
              "HEAD %s answered like GET without a body: %s (GET %s) %r" % (path, st, get_st,
                                                                            text[:60]))
    answer = raw_exchange(svc.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, payload = answer.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200") and payload == b"",
          "HEAD sends no body bytes: %r" % answer[-60:])
    framing_checks(svc)


def framing_checks(svc):
    """Request smuggling shapes: a body whose length could be read two ways
    (two Content-Lengths, Content-Length beside Transfer-Encoding, a
    transfer coding other than chunked alone, whitespace between a header's
    name and its colon) is 400 JSON and the connection
    closes, so a request hidden in the body is never answered. (libmicrohttpd
    took the first of two lengths and let chunked override the length,
    keeping the connection: the smuggled request was answered 404; with an
    unknown coding it read until the client left, 30 s; "Content-Length :"
    was another header, the body the next request.)"""
    hidden = b"GET /api/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    shapes = [
        ("two Content-Lengths", b"Content-Length: 5\r\nContent-Length: 60\r\n", b'{"a":'),
        ("two Content-Lengths, the longer first",
         b"Content-Length: 60\r\nContent-Length: 5\r\n", b'{"a":'),
        ("Content-Length and chunked",
         b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
        ("chunked and Content-Length",
         b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", b"0\r\n\r\n"),
        ("Transfer-Encoding twice",
         b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        ("chunked not last", b"Transfer-Encoding: chunked, gzip\r\n", b"0\r\n\r\n"),
        ("an unknown coding", b"Transfer-Encoding: gzip\r\n", b"{}"),
        ("whitespace before the colon", b"Content-Length : %d\r\n" % len(hidden), b""),
        # obs-fold: libmicrohttpd glued the continuation to the name
        # ("Content-Length0"), read no body and answered the hidden request;
        # a proxy unfolding it, or taking the line for a header, frames it
        # otherwise
        ("a Content-Length folded", b"Content-Length: %d\r\n 0\r\n" % len(hidden), b""),
        ("a Transfer-Encoding folded", b"Transfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
        ("a Content-Length in a fold", b"X-A: a\r\n Content-Length:%d\r\n" % len(hidden), b""),
        # a bare CR: libmicrohttpd kept "Content-Length: N" in X's value,
        # a parser that ends the line there reads a body
        ("a bare CR before a Content-Length", b"X: a\rContent-Length: %d\r\n" % len(hidden),
         b""),
        ("a Content-Length with a sign", b"Content-Length: +%d\r\n" % len(hidden), b""),
    ]
    for what, headers, body in shapes:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=15)
        try:
            sock.sendall(b"POST /api/users HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + body +
                         hidden)
            answer = read_to_end(sock)
        except (OSError, ConnectionResetError) as e:
            answer = repr(e).encode()
        finally:
            sock.close()
        head, _, rest = answer.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 400") and b"connection: close" in head.lower() and
              rest.startswith(b'{"error"') and b"HTTP/1.1" not in rest,
              "framing: %s is 400 JSON, the connection closed, nothing hidden answered: %r"
              % (what, answer[:300]))
    # one chunked body, or one length, still frames a request as before
    answer = raw_exchange(svc.port, b"POST /api/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n")
    check(answer.startswith(b"HTTP/1.1 400") and b"JSON object" in answer,
          "framing: a plain chunked body still reaches the route: %r" % answer[:200])
    # a fold of a header that frames nothing, and a tab in a value, are fine
    answer = raw_exchange(svc.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n"
                          b"X-B: a\tb\r\nConnection: close\r\n\r\n")
    check(answer.startswith(b"HTTP/1.1 200"),
          "framing: a harmless fold is served: %r" % answer[:80])
    mhd_answers(svc)


def mhd_answers(svc):
    """What libmicrohttpd refuses by itself once a request line has come is
    answered in the API's JSON, one head, and the connection closed: it sent
    HTML (a bad Content-Length's head twice, the HTML after it), and a 500
    for a chunk extension longer than its memory."""
    post = b"POST /api/users HTTP/1.1\r\nHost: x\r\n"
    cases = [
        ("Content-Length: +5", post + b"Content-Length: +5\r\n\r\n{\"a\":", 400, "Content-Length"),
        ("Content-Length: -1", post + b"Content-Length: -1\r\n\r\n", 400, "Content-Length"),
        ("Content-Length: 5, 5", post + b"Content-Length: 5, 5\r\n\r\n{\"a\":", 400,
         "Content-Length"),
        ("Content-Length: 0x5", post + b"Content-Length: 0x5\r\n\r\n", 400, "Content-Length"),
        ("an empty Content-Length", post + b"Content-Length:\r\n\r\n", 400, "Content-Length"),
        ("a 25-digit Content-Length", post + b"Content-Length: " + b"9" * 25 + b"\r\n\r\n", 413,
         "larger than"),
        ("a 70 KB chunk extension", post + b"Transfer-Encoding: chunked\r\n\r\n2;" +
         b"x" * 70000 + b"\r\n[]\r\n0\r\n\r\n", 400, "chunk"),
        ("a chunk size past 2^64", post + b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 21 +
         b"\r\n[]\r\n0\r\n\r\n", 413, "larger than"),
        ("a chunk size not in hex",
         post + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n[]\r\n0\r\n\r\n", 400, "chunked"),
        ("a header line without a colon", b"GET /health HTTP/1.1\r\nHost: x\r\nfoo\r\n\r\n", 400,
         "malformed"),
        ("a 70 KB header", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 70000 +
         b"\r\n\r\n", 431, "memory"),
    ]
    for what, data, want, msg in cases:
        answer = raw_exchange(svc.port, data, timeout=15)
        head, _, body = answer.partition(b"\r\n\r\n")
        check(head.startswith(b"HTTP/1.1 %d " % want) and answer.count(b"HTTP/1.1 ") == 1 and
              b"connection: close" in head.lower() and body.startswith(b'{"error"') and
              msg.encode() in body and body.endswith(b"}\n"),
              "libmicrohttpd's answer to %s: %d JSON, one head, closed: %r"
              % (what, want, answer[:300]))
    st, _, _, _ = svc.request("GET", "/health")
    check(st == 200, "after the malformed requests, served: %s" % st)


def log_size(svc):
    svc.err.flush()
    return os.path.getsize(svc.err_path)


def slowloris(args, url, workdir):
    """300 connections from one address (more than it may hold), each
    trickling a header line every 2 s and never finishing its head:
    requests from another address are answered all along, the trickling
    ones are cut once their head time is up however much they trickle, and
    then the attacking address is served again too."""
    svc = Service(args.binary, url, workdir)
    socks, lock, stop = [], threading.Lock(), threading.Event()
    for i in range(300):
        try:
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            socks.append(s)
        except OSError:
            pass  # refused: over the per-address limit
    cut_answers = []

    def trickle():
        end = time.monotonic() + 90
        k = 0
        while not stop.is_set() and time.monotonic() < end:
            with lock:
                alive = list(socks)
            if not alive:
                return
            for s in alive:
                try:
                    s.sendall(b"X-Trickle-%d: x\r\n" % k)
                except OSError:
                    try:
                        cut_answers.append(s.recv(4096))
                    except OSError:
                        cut_answers.append(b"")
                    with lock:
                        socks.remove(s)
                    s.close()
            k += 1
            stop.wait(2)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        answered = 0
        for _ in range(5):
            st, _, doc, _ = svc.request("GET", "/health", source="127.0.0.2", timeout=30)
            answered += st == 200
        check(answered == 5, "another address is served during the attack (%d of 5)" % answered)
        # the attacking address itself: refused (503) while its trickling
        # connections fill its share, served again once they are cut
        same, tries, refusals = None, 0, set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tries += 1
            try:
                same, r, doc, _ = svc.request("GET", "/health", timeout=30)
                if same == 200:
                    break
                refusals.add((same, r.getheader("Retry-After"), bool(doc and "error" in doc)))
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        check(refusals <= {(503, "1", True)},
              "over its share, the attacking address is told 503 with Retry-After: %s" % refusals)
        check(same == 200, "the attacking address is served again (%s after %d tries)"
              % (same, tries))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if not socks:
                    break
            time.sleep(0.5)
        with lock:
            left = len(socks)
        check(left == 0, "every trickling connection was cut (%d left)" % left)
        timeouts = sum(1 for a in cut_answers if a.startswith(b"HTTP/1.1 408"))
        print("slowloris: %d of %d cut connections got a 408" % (timeouts, len(cut_answers)),
              flush=True)
        check(timeouts > 0 and all(b'{"error"' in a for a in cut_answers if a),
              "cut connections are told so in JSON (408)")
        check(log_size(svc) < 64 * 1024, "log stays small under the attack: %d bytes"
              % log_size(svc))
    finally:
        stop.set()
        t.join()
        with lock:
            for s in socks:
                s.close()
        code = svc.stop()
    check(code == 0, "SIGTERM after the attack: exit 0 (got %s)" % code)


def cpu_seconds(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def fd_exhaustion(args, url, workdir):
    """Under ulimit -n 64, told it may take more connections than it has
    descriptors for, 150 idle connections: accept fails with EMFILE. The
    service must back off rather than spin, log a few lines rather than
    gigabytes, and serve again once the idle connections are gone."""
    svc = Service(args.binary, url, workdir,
                  extra_args=["--threads", "2", "--max-connections", "500", "--max-per-ip", "0"],
                  env_extra={"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0"}, nofile=64)
    pid = svc.proc.pid
    try:
        st, _, _, _ = svc.request("GET", "/health")
        check(st == 200, "health 200 before: %s" % st)
        idle = []
        for _ in range(150):
            try:
                idle.append(socket.create_connection(("127.0.0.1", svc.port), timeout=10))
            except OSError:
                break
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(8)
        cpu = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
        size = log_size(svc)
        print("fd exhaustion: %d idle connections; %.2f s CPU in %.1f s; log %d bytes"
              % (len(idle), cpu, wall, size), flush=True)
        check("Too many open files" in svc.log(), "descriptors really ran out")
        check(size < 64 * 1024, "log stays small while out of descriptors: %d bytes" % size)
        for s in idle:
            s.close()
        st, tries = None, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tries += 1
            try:
                st, _, _, _ = svc.request("GET", "/health", timeout=30)
                if st == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.5)
        check(st == 200, "served again once descriptors are free (%s after %d tries)" % (st, tries))
    finally:
        code = svc.stop()
    check(code == 0, "SIGTERM after descriptors ran out: exit 0 (got %s)" % code)


def fd_budget(args, url, workdir):
    """Under ulimit -n 64 with the limits shiftboard derives itself: 150
    idle connections from one address never exhaust the descriptors, and
    another address is still served."""
    svc = Service(args.binary, url, workdir, extra_args=["--max-per-ip", "8"],
                  env_extra={"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0"}, nofile=64)
    m = re.search(r"at most (\d+) connections", svc.banner)
    check(m and int(m.group(1)) < 64, "connection limit under the open-file limit: %r" % svc.banner)
    idle = []
    try:
        for _ in range(150):
            try:
                idle.append(socket.create_connection(("127.0.0.1", svc.port), timeout=10))
            except OSError:
                break
        time.sleep(2)
        st, _, _, _ = svc.request("GET", "/health", source="127.0.0.2", timeout=30)
        check(st == 200, "another address served while one holds its share idle: %s" % st)
        check("Too many open files" not in svc.log(), "descriptors never ran out")
        check(log_size(svc) < 64 * 1024, "log stays small: %d bytes" % log_size(svc))
    finally:
        for s in idle:
            s.close()
        code = svc.stop()
    check(code == 0, "SIGTERM: exit 0 (got %s)" % code)


def slow_body(args, url, workdir):
    """A body trickled a byte every 2 s: cut with a JSON 408 once the
    request's body time is up, while other requests are answered."""
    svc = Service(args.binary, url, workdir)
    try:
        sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        sock.sendall(b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        answer, sent = b"", 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                sock.sendall(b" ")
                sent += 1
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 2)
            if readable:
                try:
                    answer = read_to_end(sock)
                except OSError:
                    pass
                break
            if sent == 3:
                st, _, _, _ = svc.request("GET", "/health", timeout=30)
                check(st == 200, "others served during a slow body: %s" % st)
        sock.close()
        print("slow body: cut after %d bytes: %r" % (sent, answer[:40]), flush=True)
        check(answer.startswith(b"HTTP/1.1 408") and b'{"error"' in answer,
              "a trickled body is cut with a JSON 408: %r" % answer[:80])
    finally:
        code = svc.stop()
    check(code == 0, "SIGTERM after a slow body: exit 0 (got %s)" % code)


def health_soon(svc, source=None, tries=20):
    """GET /health until it answers 200 (each try bounded by the client's
    timeout); returns the last status, or the exception that ended a try."""
    st = None
    for _ in range(tries):
        try:
            st, _, _, _ = svc.request("GET", "/health", source=source, timeout=10)
            if st == 200:
                return st
        except (OSError, http.client.HTTPException) as e:
            st = repr(e)
        time.sleep(0.25)
    return st


def open_idle(port, n, source=None):
    """n connections that send nothing; the ones the service refused at once
    are closed by it, which is fine."""
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=10,
                                                  source_address=(source, 0) if source else None))
        except OSError:
            pass
    return socks


def past_the_limit(args, url, workdir):
    """--max-connections 20, then limit+1 and twice the limit idle
    connections from one address: another address is served meanwhile (an
    idle connection of the crowded address makes room), and /health answers
    200 right after they close, every time; SIGTERM with twice the limit
    open still ends the process. (libmicrohttpd's own refusal path
    deadlocked here: nothing answered again, SIGTERM included.)"""
    svc = Service(args.binary, url, workdir,
                  extra_args=["--max-connections", "20", "--max-per-ip", "0"])
    try:
        check(health_soon(svc) == 200, "flood: health 200 before")
        for n in (21, 40, 21, 40):
            idle = open_idle(svc.port, n)
            time.sleep(1)
            st = health_soon(svc, source="127.0.0.2", tries=4)
            check(st == 200, "flood: with %d idle connections open (limit 20), another address "
                  "is served: %s" % (n, st))
            for s in idle:
                s.close()
            st = health_soon(svc, tries=4)
            check(st == 200, "flood: /health 200 right after %d idle connections closed: %s"
                  % (n, st))
        idle = open_idle(svc.port, 40)
        time.sleep(1)
    finally:
        code = svc.stop()
    check(code == 0, "flood: SIGTERM with twice the limit open: exit 0 (got %s)" % code)
    for s in idle:
        s.close()


def open_busy(port, n, phase, source=None):
    """n connections from source that keep busy without idling: "body"
    trickles a request body within its deadline, "write" pipelines more
    answers than the socket buffers hold and reads none of them."""
    socks = []
    for _ in range(n):
        try:
            s = socket.socket()
            if phase == "write":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            if source:
                s.bind((source, 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            if phase == "body":
                s.sendall(b"POST /api/users HTTP/1.1\r\nHost: x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            else:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
            socks.append(s)
        except OSError:
            pass
    return socks


def past_the_limit_busy(args, url, workdir):
    """--max-connections 8 held by one address with connections that are
    never idle (sending a body slowly, then having their answers written to
    a client that reads none): another address is still served, as one of
    the crowded address's connections is closed to make room whatever its
    phase. (Only connections waiting for a request head made room once: such
    a flood kept every other address out.)"""
    svc = Service(args.binary, url, workdir,
                  extra_args=["--max-connections", "8", "--max-per-ip", "0"])
    try:
        check(health_soon(svc) == 200, "busy flood: health 200 before")
        for phase in ("body", "write"):
            busy = open_busy(svc.port, 8, phase, source="127.0.0.1")
            time.sleep(1)
            if phase == "body":
                for s in busy:
                    try:
                        s.send(b" ")
                    except OSError:
                        pass
            st = health_soon(svc, source="127.0.0.2", tries=4)
            check(st == 200, "busy flood: with the limit held by %d connections in the %s "
                  "phase from one address, another address is served: %s" % (len(busy), phase, st))
            for s in busy:
                s.close()
            time.sleep(1)
            st = health_soon(svc, tries=8)
            check(st == 200, "busy flood: /health 200 after the %s flood closed: %s" % (phase, st))
    finally:
        code = svc.stop()
    check(code == 0, "busy flood: SIGTERM: exit 0 (got %s)" % code)


def hashing_bound(args, url, workdir):
    """--threads 2 (one hashing permit) and password hashes of seconds each:
    with the permit taken and one more register waiting for it, an
    authenticated GET /api/shifts is answered 200, and the register that
    found no permit gets 503 with Retry-After. (Hashes once ran in the
    handler slots, without a bound of their own: registers and logins filled
    every slot and the other requests got 503.)"""
    svc = Service(args.binary, url, workdir, extra_args=["--threads", "2"],
                  env_extra={"SHIFTBOARD_PWHASH": "slow"})
    try:
        token = register_and_login(svc, "hasher")
        results = []

        def register(k):
            try:
                st, r, _, _ = svc.request("POST", "/api/users",
                                          {"name": "flood%d" % k, "password": "correct horse"},
                                          source="127.0.0.3", timeout=60)
                results.append((st, r.getheader("Retry-After")))
            except (OSError, http.client.HTTPException) as e:
                results.append((repr(e), None))

        threads = [threading.Thread(target=register, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        st, _, _, text = svc.request("GET", "/api/shifts", token=token, timeout=30)
        took = time.monotonic() - t0
        for t in threads:
            t.join()
        print("hashing bound: GET /api/shifts %s in %.2f s; registers %s" % (st, took, results),
              flush=True)
        check(st == 200, "hashing bound: GET /api/shifts while every hashing permit is taken: "
              "%s %s" % (st, text[:120]))
        check(sorted(r[0] for r in results) == [201, 503] and
              any(r == (503, "1") for r in results),
              "hashing bound: one register hashes, the one past the bound gets 503 with "
              "Retry-After: %s" % results)
    finally:
        code = svc.stop()
    check(code == 0, "hashing bound: SIGTERM: exit 0 (got %s)" % code)


def hashing_per_address(args, url, workdir):
    """--threads 4 (two hashing permits) and hashes of seconds each: one
    address sending four registers at once holds at most one permit, and a
    register from another address meanwhile is 201. (One address could take
    every permit and keep the rest waiting in line: everyone else's
    registers and logins were 503 for as long as it kept asking.)"""
    svc = Service(args.binary, url, workdir, extra_args=["--threads", "4"],
                  env_extra={"SHIFTBOARD_PWHASH": "slow"})
    try:
        results = []

        def register(k):
            try:
                st, r, _, _ = svc.request("POST", "/api/users",
                                          {"name": "crowd%d" % k, "password": "correct horse"},
                                          source="127.0.0.3", timeout=120)
                results.append((st, r.getheader("Retry-After")))
            except (OSError, http.client.HTTPException) as e:
                results.append((repr(e), None))

        threads = [threading.Thread(target=register, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        st, _, _, text = svc.request("POST", "/api/users",
                                     {"name": "elsewhere", "password": "correct horse"},
                                     source="127.0.0.4", timeout=120)
        for t in threads:
            t.join()
        print("hashing per address: the other address %s; the crowded one %s" % (st, results),
              flush=True)
        check(st == 201, "hashing per address: a register from another address while one "
              "address sends four: %s %s" % (st, text[:120]))
        check(201 in [r[0] for r in results] and
              all(r[0] == 201 or r == (503, "1") for r in results),
              "hashing per address: the crowded address's registers are 201 or 503 with "
              "Retry-After: %s" % results)
    finally:
        code = svc.stop()
    check(code == 0, "hashing per address: SIGTERM: exit 0 (got %s)" % code)


def hashing_memory(args, url, workdir):
    """--threads 64 on (at most) two processors, hashes of a tenth of a
    second or so: 48 registers and logins at once from four addresses. The
    most hashes in memory at once (shiftboard_hashes_in_progress_max) stays
    within the machine's bound (shiftboard_hash_permits: the processors
    here), whatever --threads says, and every request is answered: 200,
    201, 401, or 503 with Retry-After and a reason. (Half of --threads
    could hash at once, 64 MiB each: 32 at --threads 64, 2 GiB, which
    clients could ask for to get the service killed for want of memory on
    a small machine.)"""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    svc = Service(args.binary, url, workdir, extra_args=["--threads", "64"],
                  env_extra={"SHIFTBOARD_PWHASH": "brief"}, cpus=cpus)
    sources = ["127.0.0.%d" % (40 + a) for a in range(4)]
    try:
        for src in sources:
            st, _, _, text = svc.request("POST", "/api/users",
                                         {"name": "mem" + src, "password": "correct horse"},
                                         source=src)
            check(st == 201, "hashing memory: register mem%s: %s %s" % (src, st, text[:120]))
        results = []

        def one(k):
            src = sources[k % 4]
            if k % 3 == 0:
                path, body = "/api/users", {"name": "memnew%d" % k, "password": "correct horse"}
            else:
                path = "/api/login"
                body = {"name": "mem" + src,
                        "password": "correct horse" if k % 3 == 1 else "wrong %d" % k}
            try:
                st, r, doc, _ = svc.request("POST", path, body, source=src, timeout=120)
                results.append((st, r.getheader("Retry-After"), (doc or {}).get("error")))
            except (OSError, http.client.HTTPException) as e:
                results.append((repr(e), None, None))

        threads = [threading.Thread(target=one, args=(k,)) for k in range(48)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        st, _, _, text = svc.request("GET", "/metrics")
        now = metric(text, "shiftboard_hashes_in_progress")
        peak = metric(text, "shiftboard_hashes_in_progress_max")
        permits = metric(text, "shiftboard_hash_permits")
        refused = metric(text, "shiftboard_hash_refused_total")
        counts = {}
        for r in results:
            counts[r[0]] = counts.get(r[0], 0) + 1
        print("hashing memory: answers %s; hashes at once at most %s of %s permits (%d "
              "processors), %s refused" % (counts, peak, permits, len(cpus), refused), flush=True)
        check(permits is not None and 1 <= permits <= len(cpus),
              "hashing memory: the bound follows the processors, not --threads 64: %s" % permits)
        check(peak is not None and 1 <= peak <= len(cpus) and peak <= (permits or 0),
              "hashing memory: hashes in memory at once stay within the bound: at most %s, "
              "bound %s, %d processors" % (peak, permits, len(cpus)))
        check(now == 0, "hashing memory: no hash in progress after all were answered: %s" % now)
        answered = [r for r in results if r[0] in (200, 201, 401) or
                    (r[0] == 503 and r[1] == "1" and r[2] and "busy" in r[2])]
        check(len(answered) == 48 and any(r[0] in (200, 201) for r in results),
              "hashing memory: every request answered 200, 201, 401 or 503 with Retry-After "
              "and a reason, some of them hashed: %s"
              % [r for r in results if r not in answered][:5])
        st, _, _, text = svc.request("POST", "/api/login",
                                     {"name": "mem" + sources[0], "password": "correct horse"},
                                     source=sources[0])
        check(st == 200, "hashing memory: a login afterwards: %s %s" % (st, text[:120]))
    finally:
        code = svc.stop()
    check(code == 0, "hashing memory: SIGTERM: exit 0 (got %s)" % code)


def dashboard_history_cost(args, url, workdir):
    """GET /api/pool?after=-1 takes no handler slot (it must answer while
    the database holds every one), so what it costs is unbounded: with ten
    minutes of samples kept (filled here in seconds, SHIFTBOARD_SAMPLE_MS)
    it must cost about what GET /api/pool does, not a JSON object built and
    printed for each of 600 samples per request. Measured as the process's
    CPU time over 200 requests of each, with a wide margin. (It cost about
    15 ms of CPU a request, 15 times the plain route's: a few clients
    asking for it over and over took both processors, bounded by nothing.)"""
    svc = Service(args.binary, url, workdir, env_extra={"SHIFTBOARD_SAMPLE_MS": "5"})
    try:
        kept = 0
        for _ in range(600):
            st, _, doc, _ = svc.request("GET", "/api/pool?after=-1")
            kept = len(doc["history"]) if st == 200 else 0
            if kept >= 600:
                break
            time.sleep(0.1)
        check(kept == 600, "dashboard history: ten minutes of samples kept (%d)" % kept)
        seq = doc["seq"]
        st, _, doc, text = svc.request("GET", "/api/pool?after=%d" % (seq - 3))
        check(st == 200 and [h["seq"] for h in doc["history"]][:3] == [seq - 2, seq - 1, seq]
              and doc["seq"] >= seq and "size" in doc and "held" in doc,
              "dashboard history: after=SEQ answers the samples after it: %s" % text[:200])

        def cost(path):
            c0 = cpu_seconds(svc.proc.pid)
            for _ in range(200):
                st, _, doc, _ = svc.request("GET", path)
                check(st == 200 and "size" in doc, "dashboard history: %s: %s" % (path, st))
            return cpu_seconds(svc.proc.pid) - c0

        plain = cost("/api/pool")
        full = cost("/api/pool?after=-1")
        print("dashboard history: 200 plain /api/pool %.2f s of CPU, 200 with ten minutes of "
              "history %.2f s" % (plain, full), flush=True)
        check(full <= 5 * plain + 0.5,
              "dashboard history: 200 requests with 600 samples cost %.2f s of CPU, the plain "
              "route %.2f s" % (full, plain))
    finally:
        code = svc.stop()
    check(code == 0, "dashboard history: SIGTERM: exit 0 (got %s)" % code)


def slots_per_address(args, workdir):
    """--threads 8 (a share of 6 slots per address by default) and a slow
    database (the pool's two connections taken by writes waiting on a
    SQLite lock the test holds, so every request in a handler waits for
    one): one address gets exactly its 6 slots, its 7th and 8th requests
    wait in its line holding no slot (nor a connection) and are 503 with
    Retry-After when the 2 s bound ends, and a request from another address
    then still gets a slot and is answered 200 once the lock is let go. With
    --slots-per-ip 0, one address gets every slot. (Only hashing permits had
    a share: one address with many connections held every handler slot and
    every other client got 503 "server busy" after its 2 s wait.)"""
    import sqlite3
    env = {"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0", "DB_POOL_TIMEOUT": "120",
           "DB_BUSY_TIMEOUT_MS": "120000", "DB_STATEMENT_TIMEOUT_MS": "120000"}

    def occupied(svc):
        pool = svc.request("GET", "/api/pool")[2]
        return pool["in_use"] + pool["waiting"]

    def wait_for(cond, bound=30):
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline and not cond():
            time.sleep(0.05)
        return cond()

    for share, crowd in ((None, 6), ("0", 8)):
        tag = "slots per address" + (" off" if share else "")
        path = os.path.join(workdir, "slots%s.db" % (share or ""))
        svc = Service(args.binary, "sqlite:" + path, workdir,
                      extra_args=["--slots-per-ip", share] if share else [], env_extra=env)
        holder = None
        try:
            tok = register_and_login(svc, "sam")
            other = register_and_login(svc, "oli")
            holder = sqlite3.connect(path, isolation_level=None, timeout=60)
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("INSERT INTO schema_version (version) VALUES (0)")
            held, extra, elsewhere = [], [], []

            def write(into):
                try:
                    st, r, doc, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok,
                                                source="127.0.0.40", timeout=300)
                    into.append((st, r.getheader("Retry-After"), (doc or {}).get("error")))
                except (OSError, http.client.HTTPException) as e:
                    into.append((repr(e), None, None))

            def read():
                try:
                    elsewhere.append(svc.request("GET", "/api/shifts", token=other,
                                                 source="127.0.0.41", timeout=300)[0])
                except (OSError, http.client.HTTPException) as e:
                    elsewhere.append(repr(e))

            crowders = [threading.Thread(target=write, args=(held,)) for _ in range(crowd)]
            for t in crowders:
                t.start()
            check(wait_for(lambda: occupied(svc) >= crowd),
                  "%s: %d requests from one address in their handlers: %d"
                  % (tag, crowd, occupied(svc)))
            threads = crowders
            if not share:
                # past the share by one, and by two
                extras = [threading.Thread(target=write, args=(extra,)) for _ in range(2)]
                for t in extras:
                    t.start()
                time.sleep(0.5)
                check(occupied(svc) == crowd, "%s: past the share, requests hold no slot: %d "
                      "in handlers" % (tag, occupied(svc)))
                wait_for(lambda: len(extra) == 2, bound=20)
                threads = threads + extras
                before = occupied(svc)
                reader = threading.Thread(target=read)
                reader.start()
                threads.append(reader)
                wait_for(lambda: elsewhere or occupied(svc) > before, bound=20)
                print("%s: the extra requests %s; another address: %s, %d requests waiting on "
                      "the database" % (tag, extra, elsewhere, occupied(svc)), flush=True)
                check(len(extra) == 2 and all(e[0] == 503 and e[1] == "1" and e[2] and
                                              "your address" in e[2] for e in extra),
                      "%s: the 7th and 8th requests from one address are 503 with "
                      "Retry-After: %s" % (tag, extra))
                check(not elsewhere and occupied(svc) == before + 1,
                      "%s: a request from another address gets a slot (waits on the database, "
                      "not refused): %s" % (tag, elsewhere))
            holder.execute("ROLLBACK")
            for t in threads:
                t.join()
            check([h[0] for h in held] == [201] * crowd,
                  "%s: the %d requests within the share went through: %s" % (tag, crowd, held))
            if not share:
                check(elsewhere == [200], "%s: the other address is served: %s"
                      % (tag, elsewhere))
                text = svc.request("GET", "/metrics")[3]
                refused = metric(text, "shiftboard_slots_per_ip_refused_total")
                check(refused == 2, "%s: the refusals counted in /metrics: %s" % (tag, refused))
        finally:
            if holder:
                holder.close()
            code = svc.stop()
        check(code == 0, "%s: SIGTERM: exit 0 (got %s)" % (tag, code))


def slowloris_many(args, url, workdir):
    """Six addresses trickle header lines on 200 connections each (1,200,
    thirty times the limit, as the flood that once stopped the service)
    against --max-connections 40: a client from another address is served all
    along (registers, logs in, writes, reads), the service is whole once
    the flood ends, and SIGTERM during the flood ends it."""
    svc = Service(args.binary, url, workdir, extra_args=["--max-connections", "40"])
    socks, lock, stop = [], threading.Lock(), threading.Event()
    sources = ["127.0.0.%d" % i for i in range(10, 16)]

    def attacker(src):
        mine = []
        while not stop.is_set():
            # keep 200 connections open, replacing the ones cut or refused
            while len(mine) < 200 and not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", svc.port), timeout=10,
                                                 source_address=(src, 0))
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    mine.append(s)
                except OSError:
                    break
            for s in list(mine):
                try:
                    s.sendall(b"X-Trickle: x\r\n")
                except OSError:
                    mine.remove(s)
                    s.close()
            stop.wait(1)
        with lock:
            socks.extend(mine)

    threads = [threading.Thread(target=attacker, args=(src,)) for src in sources]
    code = None
    try:
        check(health_soon(svc) == 200, "slowloris x6: health 200 before")
        for t in threads:
            t.start()
        time.sleep(3)
        ok = 0
        for i in range(5):
            try:
                st, _, _, _ = svc.request("GET", "/health", source="127.0.0.2", timeout=30)
                ok += st == 200
            except (OSError, http.client.HTTPException) as e:
                print("slowloris x6: health from 127.0.0.2: %r" % e, flush=True)
        check(ok == 5, "slowloris x6: a client of another address is served (%d of 5)" % ok)
        creds = {"name": "real", "password": "correct horse"}
        try:
            st, _, _, text = svc.request("POST", "/api/users", creds, source="127.0.0.3",
                                         timeout=30)
            check(st == 201, "slowloris x6: register from another address: %s %s"
                  % (st, text[:80]))
            st, _, doc, text = svc.request("POST", "/api/login", creds, source="127.0.0.3",
                                           timeout=30)
            check(st == 200, "slowloris x6: login from another address: %s %s" % (st, text[:80]))
            tok = doc["token"]
            st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok,
                                      source="127.0.0.3", timeout=30)
            check(st == 201, "slowloris x6: write from another address: %s" % st)
            st, _, _, _ = svc.request("GET", "/api/shifts", token=tok, source="127.0.0.3",
                                      timeout=30)
            check(st == 200, "slowloris x6: read from another address: %s" % st)
        except (OSError, http.client.HTTPException, KeyError, TypeError) as e:
            check(False, "slowloris x6: a real client from another address: %r" % e)
        # the flood still on: SIGTERM ends the process
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.wait()
        check(code == 0, "slowloris x6: SIGTERM during the flood: exit 0 (got %s)" % code)
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in socks:
            s.close()
        if code is None:
            svc.stop()
    # whole again once the flood ends: a new process is not the point, so
    # the same flood is run against a fresh one and then stopped
    svc = Service(args.binary, url, workdir, extra_args=["--max-connections", "40"])
    try:
        stop.clear()
        socks.clear()
        threads = [threading.Thread(target=attacker, args=(src,)) for src in sources]
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join()
        for s in socks:
            s.close()
        st = health_soon(svc, tries=4)
        check(st == 200, "slowloris x6: /health 200 right after the flood ends: %s" % st)
        st = health_soon(svc, source=sources[0], tries=4)
        check(st == 200, "slowloris x6: an attacking address is served again: %s" % st)
    finally:
        code = svc.stop()
    check(code == 0, "slowloris x6: SIGTERM after the flood: exit 0 (got %s)" % code)


def descriptors_flood(args, url, workdir):
    """Under ulimit -n 256, 400 idle connections: with the limit shiftboard
    derives, another address is served and /health is 200 once they close;
    told to take more than it has descriptors for, accept fails (EMFILE),
    and SIGTERM while out of descriptors still ends the process."""
    svc = Service(args.binary, url, workdir, extra_args=["--max-per-ip", "0"], nofile=256)
    try:
        idle = open_idle(svc.port, 400)
        time.sleep(1)
        st = health_soon(svc, source="127.0.0.2", tries=4)
        check(st == 200, "ulimit 256: another address served with 400 connections open: %s" % st)
        for s in idle:
            s.close()
        st = health_soon(svc, tries=4)
        check(st == 200, "ulimit 256: /health 200 right after 400 connections closed: %s" % st)
    finally:
        code = svc.stop()
    check(code == 0, "ulimit 256: SIGTERM: exit 0 (got %s)" % code)
    # libmicrohttpd's own shutdown frees connections it had queued and not
    # started without the queue's lock: tsan.supp says which, and why
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tsan.supp")
    tsan = (os.environ.get("TSAN_OPTIONS", "") + " suppressions=" + supp).strip()
    svc = Service(args.binary, url, workdir,
                  extra_args=["--max-per-ip", "0", "--max-connections", "1000"], nofile=256,
                  env_extra={"TSAN_OPTIONS": tsan})
    idle = []
    try:
        idle = open_idle(svc.port, 400)
        time.sleep(2)
        check("Too many open files" in svc.log(), "ulimit 256: descriptors really ran out")
    finally:
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.wait()
        for s in idle:
            s.close()
    check(code == 0, "ulimit 256: SIGTERM while out of descriptors: exit 0 (got %s)" % code)


def flood(args, workdir):
    url = "sqlite:" + os.path.join(workdir, "sb.db")
    past_the_limit(args, url, workdir)
    slowloris_many(args, url, workdir)
    descriptors_flood(args, url, workdir)


def guessing(args, workdir):
    """Limits on guessing: failed logins per account and per address, failed
    tokens per address, answered 429 with Retry-After; the legitimate user
    on another address is not blocked; the table stays within its fixed
    size however many addresses and names are tried."""
    url = "sqlite:" + os.path.join(workdir, "sb.db")
    svc = Service(args.binary, url, workdir,
                  env_extra={"SHIFTBOARD_RATE_LIMIT_ENTRIES": "64"})

    def login(name, password, source):
        return svc.request("POST", "/api/login", {"name": name, "password": password},
                           source=source)

    def is_429(st, r, doc):
        return (st == 429 and (r.getheader("Retry-After") or "").isdigit() and
                int(r.getheader("Retry-After")) >= 1 and doc and "too many" in doc["error"])

    try:
        ann_pw = "correct horse"
        st, _, _, _ = svc.request("POST", "/api/users", {"name": "ann", "password": ann_pw},
                                  source="127.0.0.5")
        check(st == 201, "guessing: register ann")
        st, _, _, _ = login("ann", ann_pw, "127.0.0.5")
        check(st == 200, "guessing: ann logs in from her address")
        # one address guesses ann's password: the account's limit
        statuses = [login("ann", "guess %d" % i, "127.0.0.2")[0] for i in range(10)]
        check(statuses == [401] * 10, "guessing: the first 10 wrong passwords are 401: %s"
              % statuses)
        st, r, doc, text = login("ann", "guess 10", "127.0.0.2")
        check(is_429(st, r, doc), "guessing: the 11th guess of one account is 429 with "
              "Retry-After: %s %s %s" % (st, r.getheader("Retry-After"), text[:80]))
        st, r, doc, _ = login("ann", ann_pw, "127.0.0.2")
        check(is_429(st, r, doc), "guessing: even the right password from the guessing address "
              "is 429 while the account is limited: %s" % st)
        st, _, _, _ = login("ann", ann_pw, "127.0.0.5")
        check(st == 200, "guessing: ann from the address she logged in from is not blocked: %s"
              % st)
        # a user who registered and has not logged in yet: the address she
        # registered from is hers like one she logged in from
        st, _, _, _ = svc.request("POST", "/api/users", {"name": "cat", "password": ann_pw},
                                  source="127.0.0.6")
        check(st == 201, "guessing: register cat")
        statuses = [login("cat", "guess %d" % i, "127.0.0.7")[0] for i in range(11)]
        check(statuses == [401] * 10 + [429], "guessing: cat's account limited: %s" % statuses)
        st, _, _, text = login("cat", ann_pw, "127.0.0.6")
        check(st == 200, "guessing: cat logs in from the address she registered from while her "
              "account is limited: %s %s" % (st, text[:80]))
        st, _, _, _ = svc.request("POST", "/api/users", {"name": "bob", "password": ann_pw},
                                  source="127.0.0.3")
        st, _, doc, _ = login("bob", ann_pw, "127.0.0.3")
        check(st == 200, "guessing: another user on another address logs in: %s" % st)
        bob = doc["token"] if st == 200 else ""
        # the same address tries other names: the address's limit (20)
        statuses = [login("x%d" % i, "guess", "127.0.0.2")[0] for i in range(10)]
        check(statuses == [401] * 10, "guessing: 10 more names, 401 each: %s" % statuses)
        st, r, doc, _ = login("y", "guess", "127.0.0.2")
        check(is_429(st, r, doc), "guessing: the address's 21st failure is 429: %s" % st)
        # tokens: per address
        statuses = [svc.request("GET", "/api/shifts", token=secrets.token_hex(32),
                                source="127.0.0.4")[0] for _ in range(20)]
        check(statuses == [401] * 20, "guessing: 20 wrong tokens are 401: %s" % set(statuses))
        st, r, doc, _ = svc.request("GET", "/api/shifts", token=secrets.token_hex(32),
                                    source="127.0.0.4")
        check(is_429(st, r, doc), "guessing: the 21st wrong token is 429: %s" % st)
        st, _, _, _ = svc.request("GET", "/api/shifts", token=bob, source="127.0.0.3")
        check(st == 200, "guessing: a good token from another address works: %s" % st)
        # a token that expired is no guess: a client still presenting it (a
        # tab left polling overnight) must not lock its address out of the
        # login it needs
        st, _, doc, _ = svc.request("POST", "/api/users", {"name": "dee", "password": ann_pw},
                                    source="127.0.0.8")
        st, _, doc, _ = login("dee", ann_pw, "127.0.0.8")
        check(st == 200, "guessing: dee logs in: %s" % st)
        dee = doc["token"] if st == 200 else ""
        import sqlite3
        db = sqlite3.connect(url[len("sqlite:"):], timeout=60)
        db.execute("UPDATE tokens SET expires_at = 1 WHERE user_id = "
                   "(SELECT id FROM users WHERE name = 'dee')")
        db.commit()
        db.close()
        statuses = [svc.request("GET", "/api/shifts", token=dee, source="127.0.0.8")[0]
                    for _ in range(25)]
        check(statuses == [401] * 25, "guessing: an expired token presented 25 times is 401 "
              "each time, not counted as guessing: %s" % statuses)
        st, _, doc, text = login("dee", ann_pw, "127.0.0.8")
        check(st == 200, "guessing: dee logs in again from that address: %s %s" % (st, text[:80]))
        # many addresses and names: the table keeps its size
        for a in range(1, 201):
            for k in range(2):
                login("n%d-%d" % (a, k), "guess", "127.0.1.%d" % a)
        st, _, _, text = svc.request("GET", "/metrics")
        entries = metric(text, "shiftboard_ratelimit_entries")
        capacity = metric(text, "shiftboard_ratelimit_capacity")
        evicted = metric(text, "shiftboard_ratelimit_evictions_total")
        print("guessing: table %s of %s slots, %s evicted" % (entries, capacity, evicted),
              flush=True)
        check(capacity == 64 and entries is not None and entries <= capacity and evicted > 0,
              "guessing: 600 keys fit a 64-slot table: %s of %s, %s evicted"
              % (entries, capacity, evicted))
        st, _, _, _ = login("bob", ann_pw, "127.0.0.3")
        check(st == 200, "guessing: bob still logs in after the spray: %s" % st)
    finally:
        code = svc.stop()
    check(code == 0, "guessing: SIGTERM: exit 0 (got %s)" % code)
    svc = None
    guessing_at_once(args, workdir)
    tokens_at_once(args, workdir)


def guessing_at_once(args, workdir):
    """Twelve wrong passwords for one account at once (two addresses, six
    each) are held up after the limit's check: the pool's two connections
    are taken by writes waiting on a SQLite lock that the test holds, until
    every guess waits for one. Released, exactly 10 are judged (401) and
    the 2 past the account's limit are 429. (The check used to count
    nothing until the hash was judged, so guesses running at once all
    passed it: 12 of 10, and as many more as there are hashing permits.)"""
    import sqlite3
    path = os.path.join(workdir, "at_once.db")
    svc = Service(args.binary, "sqlite:" + path, workdir, extra_args=["--threads", "24"],
                  env_extra={"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0", "DB_POOL_TIMEOUT": "120",
                             "DB_BUSY_TIMEOUT_MS": "120000", "DB_STATEMENT_TIMEOUT_MS": "120000"})
    holder = None
    try:
        tok = register_and_login(svc, "wes")
        st, _, _, _ = svc.request("POST", "/api/users", {"name": "eve", "password": "correct horse"})
        check(st == 201, "at once: register eve: %s" % st)
        holder = sqlite3.connect(path, isolation_level=None, timeout=60)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO schema_version (version) VALUES (0)")
        guesses, writes = [], []

        def write():
            writes.append(svc.request("POST", "/api/shifts", SHIFT, token=tok, timeout=300)[0])

        def guess(k):
            guesses.append(svc.request("POST", "/api/login",
                                       {"name": "eve", "password": "guess %d" % k},
                                       source="127.0.0.%d" % (20 + k % 2), timeout=300)[0])

        writers = [threading.Thread(target=write) for _ in range(2)]
        for t in writers:
            t.start()
        deadline = time.monotonic() + 120
        pool = {}
        while time.monotonic() < deadline:
            pool = svc.request("GET", "/api/pool")[2]
            if pool["in_use"] >= 2:
                break
            time.sleep(0.05)
        guessers = [threading.Thread(target=guess, args=(k,)) for k in range(12)]
        for t in guessers:
            t.start()
        while time.monotonic() < deadline:
            pool = svc.request("GET", "/api/pool")[2]
            if pool["waiting"] + len(guesses) >= 12:
                break
            time.sleep(0.05)
        print("at once: %d guesses waiting for a connection, %d answered"
              % (pool["waiting"], len(guesses)), flush=True)
        holder.execute("ROLLBACK")
        for t in guessers + writers:
            t.join()
        check(sorted(guesses) == [401] * 10 + [429] * 2,
              "at once: 12 guesses at one account at once: 10 judged, 2 refused: %s"
              % sorted(guesses))
        check(writes == [201, 201], "at once: the writes held up went through: %s" % writes)
    finally:
        if holder:
            holder.close()
        code = svc.stop()
    check(code == 0, "at once: SIGTERM: exit 0 (got %s)" % code)


def tokens_at_once(args, workdir):
    """Twenty-four unknown tokens from one address at once, held up after
    the limit's check (the pool's two connections taken by writes waiting
    on a SQLite lock the test holds) until every one waits for a
    connection. Released, exactly 20 are 401 and the 4 past the address's
    limit are 429. (Unknown tokens were counted after their lookup without
    a second look at the limit: tokens checked at once all passed it, 24
    of 20, and as many more as there are handler slots.)"""
    import sqlite3
    path = os.path.join(workdir, "tokens_at_once.db")
    svc = Service(args.binary, "sqlite:" + path, workdir, extra_args=["--threads", "32"],
                  env_extra={"DB_POOL_SIZE": "2", "DB_MAX_OVERFLOW": "0", "DB_POOL_TIMEOUT": "120",
                             "DB_BUSY_TIMEOUT_MS": "120000", "DB_STATEMENT_TIMEOUT_MS": "120000"})
    holder = None
    try:
        tok = register_and_login(svc, "tia")
        holder = sqlite3.connect(path, isolation_level=None, timeout=60)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO schema_version (version) VALUES (0)")
        guesses, writes = [], []

        def write():
            writes.append(svc.request("POST", "/api/shifts", SHIFT, token=tok, timeout=300)[0])

        def guess():
            guesses.append(svc.request("GET", "/api/shifts", token=secrets.token_hex(32),
                                       source="127.0.0.30", timeout=300)[0])

        writers = [threading.Thread(target=write) for _ in range(2)]
        for t in writers:
            t.start()
        deadline = time.monotonic() + 120
        pool = {}
        while time.monotonic() < deadline:
            pool = svc.request("GET", "/api/pool")[2]
            if pool["in_use"] >= 2:
                break
            time.sleep(0.05)
        guessers = [threading.Thread(target=guess) for _ in range(24)]
        for t in guessers:
            t.start()
        while time.monotonic() < deadline:
            pool = svc.request("GET", "/api/pool")[2]
            if pool["waiting"] + len(guesses) >= 24:
                break
            time.sleep(0.05)
        print("tokens at once: %d waiting for a connection, %d answered"
              % (pool["waiting"], len(guesses)), flush=True)
        holder.execute("ROLLBACK")
        for t in guessers + writers:
            t.join()
        check(sorted(guesses) == [401] * 20 + [429] * 4,
              "tokens at once: 24 unknown tokens from one address at once: 20 judged, 4 "
              "refused: %s" % sorted(guesses))
        check(writes == [201, 201], "tokens at once: the writes held up went through: %s" % writes)
        st, _, _, _ = svc.request("GET", "/api/shifts", token=tok)
        check(st == 200, "tokens at once: a good token from another address works: %s" % st)
    finally:
        if holder:
            holder.close()
        code = svc.stop()
    check(code == 0, "tokens at once: SIGTERM: exit 0 (got %s)" % code)


def full_disk(args, workdir):
    """SQLite on a real full filesystem (a small tmpfs, filled up): writes
    are 503 with Retry-After, never 500, and /health says degraded; once
    space is freed, writes are 201 again and /health is 200."""
    if os.geteuid() != 0:
        print("full-disk: needs root to mount a tmpfs; skipped", flush=True)
        sys.exit(77)
    mnt = os.path.join(workdir, "small")
    os.mkdir(mnt)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print("full-disk: cannot mount a tmpfs (%s); skipped" % out.stderr.strip(), flush=True)
        sys.exit(77)
    svc = None
    try:
        svc = Service(args.binary, "sqlite:" + os.path.join(mnt, "sb.db"), workdir)
        tok = register_and_login(svc, "fay")
        st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok)
        check(st == 201, "full-disk: a write before: %s" % st)
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        # the WAL may still have room of its own: write until a write fails
        big = dict(SHIFT, title="t" * 200)
        st, r, doc, text = 201, None, None, ""
        writes = 0
        while st == 201 and writes < 2000:
            st, r, doc, text = svc.request("POST", "/api/shifts", big, token=tok)
            writes += 1
        print("full-disk: first failed write after %d: %s %s" % (writes, st, text[:120]),
              flush=True)
        check(st == 503 and (r.getheader("Retry-After") or "").isdigit() and doc and
              "full" in doc["error"],
              "full-disk: a write on a full disk is 503 with Retry-After: %s %s" % (st, text[:120]))
        statuses = set()
        for _ in range(5):
            statuses.add(svc.request("POST", "/api/shifts", big, token=tok)[0])
        check(statuses == {503}, "full-disk: writes stay 503, never 500: %s" % statuses)
        st, r, doc, text = svc.request("GET", "/health")
        check(st == 503 and r.getheader("Retry-After") and doc and doc["status"] == "degraded",
              "full-disk: /health says degraded while writes fail: %s %s" % (st, text[:160]))
        st, _, _, _ = svc.request("GET", "/api/shifts?limit=1", token=tok)
        check(st == 200, "full-disk: reads still work: %s" % st)
        os.unlink(filler)
        st = None
        for _ in range(20):
            st, _, _, text = svc.request("POST", "/api/shifts", SHIFT, token=tok)
            if st == 201:
                break
            time.sleep(0.25)
        check(st == 201, "full-disk: writes are 201 again once space is freed: %s %s"
              % (st, text[:120]))
        st, _, doc, text = svc.request("GET", "/health")
        check(st == 200 and doc["status"] == "ok",
              "full-disk: /health ok again: %s %s" % (st, text[:160]))
    finally:
        if svc:
            code = svc.stop()
            check(code == 0, "full-disk: SIGTERM: exit 0 (got %s)" % code)
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def hostile(args, workdir):
    url = "sqlite:" + os.path.join(workdir, "sb.db")
    slowloris(args, url, workdir)
    fd_exhaustion(args, url, workdir)
    fd_budget(args, url, workdir)
    slow_body(args, url, workdir)
    past_the_limit_busy(args, url, workdir)
    hashing_bound(args, url, workdir)
    hashing_per_address(args, url, workdir)
    hashing_memory(args, url, workdir)
    dashboard_history_cost(args, url, workdir)
    slots_per_address(args, workdir)


def clock_step(args, workdir):
    """The wall clock stepped under the service (tests/shiftboard/clockshift.c
    shifts every CLOCK_REALTIME reading it makes, while the kernel times
    absolute waits on the true wall clock): an hour forward, /health still
    waits for its database check and answers 200 instead of a timeout at
    once; an hour back, a connection that sends no whole head is still cut
    with 408 after its head time, not an hour later."""
    if not check(args.clockshift and os.path.exists(args.clockshift),
                 "clock step: the shim %r exists" % args.clockshift):
        return
    url = "sqlite:" + os.path.join(workdir, "sb.db")
    env = {"LD_PRELOAD": args.clockshift}
    # Under AddressSanitizer the shim is preloaded ahead of its runtime,
    # which it refuses unless told; the shim allocates nothing.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    # reads an hour behind: a deadline taken from them has passed already
    svc = Service(args.binary, url, workdir, extra_env=dict(env, CLOCKSHIFT_S="-3600"))
    try:
        for i in range(3):
            st, _, doc, text = svc.request("GET", "/health", timeout=30)
            check(st == 200 and doc and doc.get("status") == "ok",
                  "clock step forward: /health %d answers 200: %s %s" % (i, st, text[:200]))
    finally:
        check(svc.stop() == 0, "clock step forward: SIGTERM ends the service with 0")
    # reads an hour ahead: a deadline taken from them is an hour further off
    svc = Service(args.binary, url, workdir, extra_env=dict(env, CLOCKSHIFT_S="3600"))
    try:
        s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.settimeout(90)  # the head time is 10 s; far above it
        try:
            got = s.recv(4096)
        except OSError as e:
            got = repr(e).encode()
        s.close()
        check(got.startswith(b"HTTP/1.1 408"),
              "clock step back: an unfinished head is cut with 408: %r" % got[:80])
    finally:
        check(svc.stop() == 0, "clock step back: SIGTERM ends the service with 0")


class Proxy:
    """A TCP proxy between shiftboard and PostgreSQL that can stop
    forwarding: silent, it keeps every connection open and accepts new
    ones, but passes no byte either way, as a network that drops packets."""

    def __init__(self, host, port):
        self.target = (host, port)
        self.silent = threading.Event()
        self.closing = threading.Event()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        self.threads = [threading.Thread(target=self.accept_loop)]
        self.threads[0].start()

    def accept_loop(self):
        while not self.closing.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=10)
            except OSError:
                c.close()
                continue
            self.socks += [c, u]
            for a, b in ((c, u), (u, c)):
                t = threading.Thread(target=self.pump, args=(a, b))
                t.start()
                self.threads.append(t)

    def pump(self, a, b):
        a.settimeout(0.2)
        while not self.closing.is_set():
            try:
                data = a.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if self.silent.is_set():
                continue  # dropped on the floor
            try:
                b.sendall(data)
            except OSError:
                break
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.closing.set()
        self.lsock.close()
        for t in self.threads:
            t.join()
        for s in self.socks:
            s.close()


def silent_database(args, workdir):
    """The database stops answering without closing anything (a network
    that stops forwarding): API requests answer 503 with Retry-After
    instead of hanging, /health answers at once with the pool's view, the
    service recovers when the network does, and SIGTERM with requests stuck
    on the silent database still ends the process."""
    url, super_url, name = own_database(args.url_file, args.super_url_file)
    proxy = None
    try:
        parts = urllib.parse.urlsplit(url)
        proxy = Proxy(parts.hostname, parts.port)
        netloc = "%s:%s@127.0.0.1:%d" % (parts.username, parts.password, proxy.port)
        query = re.sub(r"connect_timeout=\d+", "connect_timeout=2", parts.query)
        via = parts._replace(netloc=netloc, query=query).geturl()
        svc = Service(args.binary, via, workdir,
                      env_extra={"DB_STATEMENT_TIMEOUT_MS": "2000", "DB_CONNECT_TIMEOUT_MS": "2000"})
        try:
            tok = register_and_login(svc, "ivy")
            st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok)
            check(st == 201, "write through the proxy: %s" % st)
            proxy.silent.set()
            results = []

            def client():
                t0 = time.monotonic()
                try:
                    st, r, doc, _ = svc.request("GET", "/api/shifts", token=tok, timeout=120)
                    results.append((st, r.getheader("Retry-After"), doc, time.monotonic() - t0))
                except Exception as e:  # a hang that the client gave up on fails the check
                    results.append((repr(e), None, None, time.monotonic() - t0))

            clients = [threading.Thread(target=client) for _ in range(6)]
            for c in clients:
                c.start()
            time.sleep(0.5)
            t0 = time.monotonic()
            st, r, doc, _ = svc.request("GET", "/health", timeout=30)
            took = time.monotonic() - t0
            print("silent database: /health %s in %.2f s: %s" % (st, took, doc), flush=True)
            check(st == 503 and r.getheader("Retry-After") and doc and "pool" in doc,
                  "health 503 with Retry-After and the pool's view while silent: %s" % st)
            check(took < 3, "health does not wait on the silent database (%.2f s)" % took)
            # the silence lasts far past the health check's budget: every
            # poll must still be answered, 503 (never a hang, never 200)
            polls = []
            for _ in range(8):
                t0 = time.monotonic()
                try:
                    st, r, doc, _ = svc.request("GET", "/health", timeout=30)
                    polls.append((st, r.getheader("Retry-After"), doc and doc.get("status")))
                except (OSError, http.client.HTTPException) as e:
                    polls.append((repr(e), None, None))
                print("silent database: /health poll %s in %.3f s" % (polls[-1][0],
                                                                     time.monotonic() - t0),
                      flush=True)
                time.sleep(0.3)
            check(all(p[0] == 503 and p[1] and p[2] == "unavailable" for p in polls),
                  "health polls during the silence all answer 503 unavailable: %s" % polls)
            for c in clients:
                c.join()
            print("silent database: API answers %s" % [(r[0], round(r[3], 2)) for r in results],
                  flush=True)
            check(all(r[0] == 503 and r[1] and r[2] and "unavailable" in r[2]["error"]
                      for r in results),
                  "API requests answer 503 with Retry-After: %s" % [r[:2] for r in results])
            proxy.silent.clear()
            st = None
            for _ in range(240):
                st, _, _, _ = svc.request("GET", "/health", timeout=30)
                if st == 200:
                    break
                time.sleep(0.25)
            check(st == 200, "health back to 200 once the network forwards again")
            st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok)
            check(st == 201, "writes work again: %s" % st)
            # silent again, requests in flight, then SIGTERM: the process ends
            proxy.silent.set()
            stuck = [threading.Thread(target=client) for _ in range(4)]
            for c in stuck:
                c.start()
            time.sleep(0.5)
            t0 = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            code = svc.wait()
            print("silent database: SIGTERM exit %s after %.1f s" % (code, time.monotonic() - t0),
                  flush=True)
            check(code != "hung", "SIGTERM ends the process while the database is silent")
            for c in stuck:
                c.join()
        finally:
            if svc.proc.poll() is None:
                svc.proc.kill()
                svc.wait()
    finally:
        if proxy:
            proxy.close()
        psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def mariadb_sql(super_url, sql):
    u = urllib.parse.urlsplit(super_url)
    env = dict(os.environ, MYSQL_PWD=urllib.parse.unquote(u.password or ""))
    out = subprocess.run(["mariadb", "--no-defaults", "-h", u.hostname, "-P", str(u.port or 3306),
                          "-u", urllib.parse.unquote(u.username), "-e", sql],
                         capture_output=True, text=True, timeout=60, env=env)
    if out.returncode != 0:
        raise SystemExit("mariadb failed: %s" % out.stderr)


def own_mysql_database(url_file, super_url_file):
    """A database of our own on the shared MariaDB, for the test user."""
    url = open(url_file).read().strip()
    super_url = open(super_url_file).read().strip()
    name = "shiftboard_%d_%s" % (os.getpid(), secrets.token_hex(4))
    u = urllib.parse.urlsplit(url)
    mariadb_sql(super_url, "CREATE DATABASE `%s` CHARACTER SET utf8mb4; "
                "GRANT ALL ON `%s`.* TO '%s'@'%s'" % (name, name, u.username, u.hostname))
    return u._replace(path="/" + name).geturl(), super_url, name


def replica_setup(args, workdir):
    """pg-replica: a primary with a synchronous standby of its own
    (tests/pg_replica.sh), commits applied on the standby before they are
    acknowledged (remote_apply) so a GET after a POST reads its write there,
    and the service's GET routes on the standby (DATABASE_REPLICA_URL)."""
    d = os.path.join(args.pg_dir, "rep")
    subprocess.run(["sh", args.pg_replica, "stop", d], capture_output=True)
    out = subprocess.run(["sh", args.pg_replica, "start", d], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit("pg_replica.sh start failed: %s" % out.stderr)
    rd = lambda name: open(os.path.join(d, name)).read().strip()
    pw, superpw = rd("password"), rd("superpw")
    url = "postgresql://dbscope:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (pw, rd("a.port"))
    super_url = "postgresql://postgres:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (
        superpw, rd("a.port"))
    psql(super_url, "ALTER DATABASE dbscope SET synchronous_commit = remote_apply")
    SERVICE_ENV["DATABASE_REPLICA_URL"] = (
        "postgresql://dbscope:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (pw, rd("b.port")))
    return d, url


def replica_used(url, workdir):
    """The GET routes run on the standby once dbscope has measured it (until
    then, read-only sessions go to the primary, by design): its pool opens
    connections, and no GET falls back to the primary after that. The lag
    bound is set far above what a loaded machine's standby lags (seen: 6.5 s
    with sanitizer builds running beside it): a read past the bound going to
    the primary is right, and is proven by the lag tests, not here. So is a
    read while the standby's last health sample is older than three monitor
    periods (a monitor thread starved on a loaded machine: seen, 5 reads of
    a run): the check is that the standby served the routes and that not
    every read fell back, not that none did."""
    svc = Service(ARGS.binary, url, workdir, env_extra={"DB_REPLICA_MAX_LAG_MS": "60000"})
    try:
        creds = {"name": "rita", "password": "correct horse battery"}
        svc.request("POST", "/api/users", creds)
        st, _, doc, _ = svc.request("POST", "/api/login", creds)
        check(st == 200, "pg-replica: login")
        tok = doc["token"]
        pool = {}
        deadline = time.time() + 60
        while time.time() < deadline:
            st, _, pool, _ = svc.request("GET", "/api/pool")
            if st == 200 and pool.get("replicas") and pool["replicas"][0]["lag_ms"] >= 0:
                break
            time.sleep(0.05)
        check(pool.get("replicas") and pool["replicas"][0]["lag_ms"] >= 0,
              "pg-replica: the standby is measured: %s" % pool.get("replicas"))
        before = pool.get("ro_fallbacks")
        # The login wrote: this user's reads stay on the primary until the
        # standby is measured to have replayed that commit (reads of one's
        # own writes), then move to the standby.
        deadline = time.time() + 30
        sent = 0
        while True:
            for _ in range(5):
                st, _, _, _ = svc.request("GET", "/api/shifts", token=tok)
                check(st == 200, "pg-replica: GET /api/shifts")
                sent += 1
            st, _, pool, _ = svc.request("GET", "/api/pool")
            if (st == 200 and pool.get("replicas") and pool["replicas"][0]["size"] >= 1) or \
                    time.time() > deadline:
                break
            time.sleep(0.05)
        check(st == 200 and pool.get("replicas") and pool["replicas"][0]["size"] >= 1,
              "pg-replica: the standby's pool served the GET routes: %s" % pool.get("replicas"))
        fell_back = (pool.get("ro_fallbacks") or 0) - (before or 0)
        check(fell_back < sent,
              "pg-replica: of %d GETs, %d fell back to the primary (%s, then %s)"
              % (sent, fell_back, before, pool.get("ro_fallbacks")))
    finally:
        check(svc.stop() == 0, "pg-replica: SIGTERM: exit 0")


def own_writes_read(url, d, workdir, rounds=1000):
    """Read-your-own-writes through the service: commits no longer wait for
    the standby (synchronous_commit = local) and its replay is paused, with
    a lag bound (DB_REPLICA_MAX_LAG_MS=60000) that keeps the standby in
    use: a shift created and read at once, 1000 times, is never missing
    (the user's reads go where that user's last commit has been applied)."""
    rd = lambda name: open(os.path.join(d, name)).read().strip()
    superpw = rd("superpw")
    primary = "postgresql://postgres:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (
        superpw, rd("a.port"))
    standby = "postgresql://postgres:%s@127.0.0.1:%s/dbscope?sslmode=disable" % (
        superpw, rd("b.port"))
    psql(primary, "ALTER DATABASE dbscope SET synchronous_commit = local")
    svc = Service(ARGS.binary, url, workdir, env_extra={"DB_REPLICA_MAX_LAG_MS": "60000"})
    paused = False
    try:
        creds = {"name": "rory", "password": "correct horse battery"}
        svc.request("POST", "/api/users", creds)
        st, _, doc, _ = svc.request("POST", "/api/login", creds)
        check(st == 200, "own writes: login")
        tok = doc["token"]
        deadline = time.time() + 60
        while time.time() < deadline:
            st, _, pool, _ = svc.request("GET", "/api/pool")
            if st == 200 and pool.get("replicas") and pool["replicas"][0]["lag_ms"] >= 0:
                break
            time.sleep(0.05)
        psql(standby, "SELECT pg_wal_replay_pause()")
        paused = True
        _, _, before, _ = svc.request("GET", "/api/pool")
        stale, reads, failed = 0, 0, []
        for i in range(rounds):
            st, _, doc, text = svc.request("POST", "/api/shifts", SHIFT, token=tok)
            if st != 201:
                failed.append((st, text[:80]))
                continue
            st, _, _, _ = svc.request("GET", "/api/shifts/%d" % doc["id"], token=tok)
            stale += st == 404
            reads += 1
            if st not in (200, 404):
                failed.append((st, "read"))
        st, _, pool, _ = svc.request("GET", "/api/pool")
        by_pos = pool["ro_pos_fallbacks"] - before["ro_pos_fallbacks"]
        by_lag = pool["ro_fallbacks"] - before["ro_fallbacks"]
        print("own writes: %d stale of %d; %d reads sent to the primary for their position, "
              "%d for the lag bound; replicas %s"
              % (stale, rounds, by_pos, by_lag, pool.get("replicas")), flush=True)
        check(not failed, "own writes: every create and read answered: %s" % failed[:5])
        check(stale == 0, "own writes: a shift read right after its creation is never missing "
              "(%d of %d were, replay paused)" % (stale, rounds))
        # not by luck: the standby was within the lag bound and lacked the
        # write, so the reads went to the primary for their user's position
        # (for the lag bound instead only once the pause outlasts it)
        check(by_pos > 0 and by_pos + by_lag >= reads,
              "own writes: every read went to the primary, some for its user's commit "
              "position (%d for position, %d for lag, of %d)" % (by_pos, by_lag, reads))
    finally:
        if paused:
            replay_resume(standby)
        psql(primary, "ALTER DATABASE dbscope SET synchronous_commit = remote_apply")
        check(svc.stop() == 0, "own writes: SIGTERM: exit 0")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--virtual-time-budget=3000"]


def page_dom(svc):
    """The dashboard's DOM after its script has run a few seconds."""
    return subprocess.run([CHROMIUM] + CHROMIUM_FLAGS + ["--dump-dom", "http://127.0.0.1:%d/" %
                                                         svc.port],
                          capture_output=True, text=True, timeout=180).stdout


def page_screenshot(svc, artifacts, tag):
    if not artifacts:
        return
    os.makedirs(artifacts, exist_ok=True)
    png = os.path.join(artifacts, "shiftboard-dashboard-%s.png" % tag)
    if os.path.exists(png):
        os.unlink(png)
    subprocess.run([CHROMIUM] + CHROMIUM_FLAGS + ["--window-size=1300,1100", "--screenshot=" + png,
                                                  "http://127.0.0.1:%d/" % svc.port],
                   capture_output=True, timeout=180)
    check(os.path.exists(png) and os.path.getsize(png) > 1000,
          "dashboard screenshot written to " + png)


def card(dom, ident):
    m = re.search(r'id="%s">([^<]*)<' % re.escape(ident), dom)
    return m.group(1) if m else None


def svg_attr(dom, ident, attr):
    m = re.search(r'<svg id="%s"[^>]*\b%s="([^"]*)"' % (re.escape(ident), attr), dom)
    return m.group(1) if m else None


def held_rows(dom):
    """(age text, site, request id) of each held session the page lists."""
    rows = re.findall(r'<tr class="held-row[^"]*"><td class="num">([^<]*)</td><td class="site">'
                      r'([^<]*)</td><td>[^<]*</td><td class="rid">([^<]*)</td>', dom)
    return rows


def age_ms(text):
    v, unit = text.split()
    return float(v) * (60000 if unit == "min" else 1000)


def dashboard_incident(args, workdir):
    """The dashboard as an operator opens it: under load, then while the
    database has gone silent behind a proxy (requests in flight hold their
    sessions, new connects time out, the circuit opens). Asserted on the
    page's DOM in headless Chromium, with a screenshot of each."""
    if not check(os.access(CHROMIUM, os.X_OK),
                 "chromium installed (scripts/packages/shiftboard-test.txt)"):
        return
    url, super_url, name = own_database(args.url_file, args.super_url_file)
    proxy = None
    svc = None
    try:
        parts = urllib.parse.urlsplit(url)
        proxy = Proxy(parts.hostname, parts.port)
        netloc = "%s:%s@127.0.0.1:%d" % (parts.username, parts.password, proxy.port)
        query = re.sub(r"connect_timeout=\d+", "connect_timeout=1", parts.query)
        via = parts._replace(netloc=netloc, query=query).geturl()
        # statements in flight when the database falls silent stay stuck
        # (and their sessions held) far longer than the checks below take
        svc = Service(args.binary, via, workdir,
                      env_extra={"DB_STATEMENT_TIMEOUT_MS": "60000",
                                 "DB_CONNECT_TIMEOUT_MS": "1000"})
        tok = register_and_login(svc, "olga")
        stop, done, problems = threading.Event(), [], []
        sent = set()

        def load(k):
            n = 0
            while not stop.is_set():
                rid = "load-%d-%d" % (k, n)
                n += 1
                sent.add(rid)
                try:
                    if n % 2:
                        st, _, _, _ = svc.request("POST", "/api/shifts", SHIFT, token=tok,
                                                  headers={"X-Request-Id": rid}, timeout=180)
                    else:
                        st, _, _, _ = svc.request("GET", "/api/shifts?limit=5", token=tok,
                                                  headers={"X-Request-Id": rid}, timeout=180)
                    done.append(st)
                except Exception as e:
                    problems.append(repr(e))
                    return

        workers = [threading.Thread(target=load, args=(k,)) for k in range(6)]
        for t in workers:
            t.start()
        time.sleep(6)  # history the page has not seen: it must show it anyway
        ok_before = sum(1 for st in done if st in (200, 201))
        opened = int(time.time() * 1000)
        dom = page_dom(svc)
        check('id="status" class="">live' in dom, "dashboard (load) reached the server")
        rate = card(dom, "rate")
        check(rate is not None and rate.isdigit() and int(rate) > 0,
              "dashboard (load) shows sessions/s > 0: %s" % rate)
        nonzero = int(svg_attr(dom, "c_rate", "data-nonzero") or 0)
        first = int(svg_attr(dom, "c_rate", "data-first") or opened)
        check(nonzero >= 4 and first < opened - 4000,
              "dashboard (load) draws the throughput from before it opened: %d seconds "
              "with sessions, first sample %d ms before" % (nonzero, opened - first))
        check(len(re.findall(r'<text class="tick"', dom)) >= 4 * 5,
              "every chart has a time axis with labels")
        check(card(dom, "circuit") == "closed", "circuit closed under load: %s" %
              card(dom, "circuit"))
        page_screenshot(svc, args.artifacts, "load")
        # sessions/s as the server counts it: every sample's sessions are
        # the pool's acquired count's step, and the load's answers needed
        # at least one session each (two: the token, then the work)
        st, _, doc, _ = svc.request("GET", "/api/pool?after=-1")
        hist = doc["history"]
        steps = all(b["sessions"] == b["acquired"] - a["acquired"] and b["dt"] > 0
                    for a, b in zip(hist, hist[1:]))
        check(steps, "each sample's sessions are the step of the pool's acquired count")
        total = sum(h["sessions"] for h in hist[1:])
        check(total == hist[-1]["acquired"] - hist[0]["acquired"] and total >= 2 * ok_before,
              "sessions over the history (%d) cover the load's %d answers" % (total, ok_before))
        check(hist[0]["rate"] == -1 and all(h["rate"] >= 0 for h in hist[1:]),
              "the first sample's rate is unknown, not zero")
        st, _, _, _ = svc.request("GET", "/api/pool?after=abc")
        check(st == 400, "a bad after= is refused: %s" % st)

        # the outage: requests in flight stay stuck holding their sessions;
        # others find no connection they can open and get 503
        proxy.silent.set()
        silenced = time.monotonic()
        refused = []

        def refuser(k):
            n = 0
            while not stop.is_set():
                rid = "refused-%d-%d" % (k, n)
                n += 1
                sent.add(rid)
                try:
                    st, _, _, _ = svc.request("GET", "/api/shifts?limit=5", token=tok,
                                              headers={"X-Request-Id": rid}, timeout=180)
                    refused.append(st)
                except Exception as e:
                    problems.append(repr(e))
                    return
                time.sleep(0.1)

        refusers = [threading.Thread(target=refuser, args=(k,)) for k in range(3)]
        for t in refusers:
            t.start()
        doc = {}
        for _ in range(240):
            st, _, doc, _ = svc.request("GET", "/api/pool?after=-1")
            if (doc["circuit"] in ("open", "half_open") and doc["held_total"] >= 1 and
                    doc["answers"]["503"] > 0):
                break
            time.sleep(0.25)
        # half_open: open, with a probe connect under way
        check(doc.get("circuit") in ("open", "half_open") and doc.get("held_total", 0) >= 1,
              "outage: circuit open and sessions held (%s, %s)" % (doc.get("circuit"),
                                                                  doc.get("held_total")))
        # the route answers anyone: who is using the service is not in it
        check(all("user_id" not in h for h in doc.get("held", [])) and
              '"user_id"' not in json.dumps(doc),
              "the held sessions name no user: %s" % doc.get("held"))
        dom = page_dom(svc)
        check('id="status" class="">live' in dom, "dashboard (outage) reached the server")
        check(card(dom, "circuit") in ("open", "half_open"),
              "dashboard (outage) shows the circuit open: %s" % card(dom, "circuit"))
        errors = card(dom, "errors")
        check(errors is not None and errors.isdigit() and int(errors) > 0,
              "dashboard (outage) shows database errors > 0: %s" % errors)
        a503 = card(dom, "a503")
        check(a503 is not None and a503.isdigit() and int(a503) > 0,
              "dashboard (outage) shows 503s > 0: %s" % a503)
        rows = held_rows(dom)
        # every request sends its id: each held session names one
        check(rows and all(re.search(r"\.c:\d+$", r[1]) and r[2] in sent for r in rows) and
              any(re.search(r"app\.c:\d+$", r[1]) for r in rows),
              "dashboard (outage) lists the held sessions with their site and request id: %s" %
              rows[:3])
        ages = [age_ms(r[0]) for r in rows]
        check(ages == sorted(ages, reverse=True), "held sessions longest first: %s" % ages)
        check(rows and ages[0] >= 500, "the held sessions' age grows: %s" % ages[:3])
        check(re.search(r"<td>connect</td>", dom) is not None,
              "dashboard (outage) lists the errors by class")
        page_screenshot(svc, args.artifacts, "outage")
        print("dashboard: outage shown %.1f s after the silence: circuit %s, errors %s, 503s %s, "
              "%d held" % (time.monotonic() - silenced, card(dom, "circuit"), errors, a503,
                           len(rows)), flush=True)
        # the proxy dropped what was sent while silent: closing it ends the
        # stuck statements at once (connection lost) rather than at their
        # statement bound
        stop.set()
        proxy.close()
        proxy = None
        for t in workers + refusers:
            t.join()
        check(not problems, "no client hung or lost its connection: %s" % problems[:2])
        check(svc.stop() == 0, "SIGTERM after the outage: exit 0")
    finally:
        if svc and svc.proc.poll() is None:
            svc.proc.kill()
            svc.wait()
        if proxy:
            proxy.close()
        psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--backend", choices=["sqlite", "pg", "pg-outage", "pg-notices", "hostile",
                                          "pg-silent", "mysql", "pg-replica", "flood", "pg-dashboard",
                                          "guessing", "full-disk", "clock-step"],
                    required=True)
    ap.add_argument("--url-file")
    ap.add_argument("--super-url-file", help="create a database of our own through it")
    ap.add_argument("--rls-probe", help="rls_probe.c's binary")
    ap.add_argument("--pg-server")
    ap.add_argument("--pg-dir")
    ap.add_argument("--pg-replica", help="tests/pg_replica.sh")
    ap.add_argument("--artifacts", help="where to keep the dashboard screenshot")
    ap.add_argument("--clockshift", help="clockshift.c's shared library (clock-step)")
    args = ap.parse_args()
    global ARGS
    ARGS = args
    with tempfile.TemporaryDirectory(prefix="shiftboard-test-") as workdir:
        if args.backend == "sqlite":
            main_api(args, "sqlite:" + os.path.join(workdir, "sb.db"), workdir)
        elif args.backend == "pg":
            if args.super_url_file:
                url, super_url, name = own_database(args.url_file, args.super_url_file)
                try:
                    main_api(args, url, workdir)
                finally:
                    psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
                bypassrls_refused(args, super_url, workdir)
            else:
                main_api(args, open(args.url_file).read().strip(), workdir)
        elif args.backend == "pg-notices":
            url, super_url, name = own_database(args.url_file, args.super_url_file)
            try:
                notices_logged(args, url, workdir)
            finally:
                psql(super_url, 'DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        elif args.backend == "hostile":
            hostile(args, workdir)
        elif args.backend == "flood":
            flood(args, workdir)
        elif args.backend == "guessing":
            guessing(args, workdir)
        elif args.backend == "full-disk":
            full_disk(args, workdir)
        elif args.backend == "clock-step":
            clock_step(args, workdir)
        elif args.backend == "pg-silent":
            silent_database(args, workdir)
        elif args.backend == "pg-dashboard":
            dashboard_incident(args, workdir)
        elif args.backend == "pg-replica":
            d, url = replica_setup(args, workdir)
            try:
                main_api(args, url, workdir)
                replica_used(url, workdir)
                own_writes_read(url, d, workdir)
            finally:
                subprocess.run(["sh", args.pg_replica, "stop", d], capture_output=True)
        elif args.backend == "mysql":
            url, super_url, name = own_mysql_database(args.url_file, args.super_url_file)
            try:
                main_api(args, url, workdir)
            finally:
                mariadb_sql(super_url, "DROP DATABASE IF EXISTS `%s`" % name)
        else:
            outage(args, workdir)
    if FAILURES:
        print("%d checks failed" % len(FAILURES))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
