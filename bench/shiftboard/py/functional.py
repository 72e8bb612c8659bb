#!/usr/bin/env python3
"""The same HTTP calls, with the same expected answers (status codes, JSON
shapes, the headers the API promises), against any shiftboard-compatible
server: shiftboard itself and its Python peers. compare.sh runs it against
each before loading any of them, so the load compares equal work.

    functional.py BASE_URL [--quiet]

Standard library only. Users get a random suffix, so the script may run
again against the same database. Exits 0 when every check passed, 1 when
one failed (each failure printed with its request and answer), 2 when the
server could not be reached.
"""
import http.client
import json
import os
import re
import sys
import urllib.parse

failures = []
checks = 0


class Answer:
    def __init__(self, method, path, status, headers, raw):
        self.method, self.path, self.status, self.headers, self.raw = (
            method, path, status, headers, raw)
        try:
            self.json = json.loads(raw) if raw else None
        except ValueError:
            self.json = "<not JSON>"

    def header(self, name):
        return self.headers.get(name.lower())

    def __str__(self):
        return "%s %s -> %d %s" % (self.method, self.path, self.status, self.raw[:300])


class Client:
    def __init__(self, base):
        u = urllib.parse.urlsplit(base)
        self.host, self.port = u.hostname, u.port or 80

    def call(self, method, path, body=None, token=None, headers=None, raw=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            h["Content-Type"] = "application/json"
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            text = r.read().decode("utf-8", "replace")
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            return Answer(method, path, r.status, hdrs, text)
        finally:
            c.close()


def check(cond, what, ans=None):
    global checks
    checks += 1
    if not cond:
        failures.append("%s%s" % (what, "\n    " + str(ans) if ans is not None else ""))
    return cond


def expect(ans, status, what):
    """ans has this status, carries X-Request-Id, and, unless 204, is a JSON
    object; an error status has exactly {"error": non-empty string}."""
    ok = check(ans.status == status, "%s: status %d expected" % (what, status), ans)
    check(bool(ans.header("X-Request-Id")), "%s: X-Request-Id missing" % what, ans)
    if status == 204:
        check(ans.raw == "", "%s: 204 with a body" % what, ans)
        return ok
    check((ans.header("Content-Type") or "").startswith("application/json"),
          "%s: Content-Type is not application/json" % what, ans)
    if status >= 400:
        check(isinstance(ans.json, dict) and list(ans.json) == ["error"] and
              isinstance(ans.json["error"], str) and ans.json["error"],
              '%s: error body is not {"error": "..."}' % what, ans)
    else:
        check(isinstance(ans.json, dict), "%s: body is not a JSON object" % what, ans)
    return ok


def is_shift(v, title=None, starts_at=None, ends_at=None):
    return (isinstance(v, dict) and sorted(v) == ["ends_at", "id", "starts_at", "title"] and
            isinstance(v["id"], int) and v["id"] > 0 and
            (title is None or v["title"] == title) and
            (starts_at is None or v["starts_at"] == starts_at) and
            (ends_at is None or v["ends_at"] == ends_at))


def run(base):
    c = Client(base)
    sfx = os.urandom(4).hex()

    a = c.call("GET", "/health")
    if not expect(a, 200, "health"):
        return
    check(a.json.get("status") == "ok", "health: status is not ok", a)

    # ---- registration ----
    alice, bob = "alice-" + sfx, "bob-" + sfx
    pw = "correct horse battery"
    a = c.call("POST", "/api/users", {"name": alice, "password": pw})
    expect(a, 201, "register")
    check(isinstance(a.json, dict) and list(a.json) == ["id"] and isinstance(a.json["id"], int),
          'register: body is not {"id": N}', a)
    expect(c.call("POST", "/api/users", {"name": alice, "password": pw}), 409, "register taken")
    expect(c.call("POST", "/api/users", {"name": bob, "password": pw}), 201, "register second")
    bad_users = [
        ("malformed JSON", b'{"name": "x", '),
        ("not an object", b'["x", "y"]'),
        ("empty body", b''),
        ("nested 5000 deep", b"[" * 5000 + b"]" * 5000),
        ("missing name", json.dumps({"password": pw}).encode()),
        ("missing password", json.dumps({"name": "carol-" + sfx}).encode()),
        ("name not a string", json.dumps({"name": 7, "password": pw}).encode()),
        ("empty name", json.dumps({"name": "", "password": pw}).encode()),
        ("name too long", json.dumps({"name": "n" * 65, "password": pw}).encode()),
        ("control character", json.dumps({"name": "a\nb" + sfx, "password": pw}).encode()),
        ("short password", json.dumps({"name": "dave-" + sfx, "password": "short"}).encode()),
        ("duplicate key", ('{"name": "e-%s", "name": "f-%s", "password": "%s"}'
                           % (sfx, sfx, pw)).encode()),
    ]
    for what, raw in bad_users:
        expect(c.call("POST", "/api/users", raw=raw), 400, "register, " + what)
    # a bad request changes nothing: none of those names can log in
    for n in ("carol-", "dave-", "e-", "f-"):
        expect(c.call("POST", "/api/login", {"name": n + sfx, "password": pw}), 401,
               "login after a refused registration")
    a = c.call("POST", "/api/users", raw=b'{"name": "big", "password": "' + b"x" * 20000 + b'"}')
    expect(a, 413, "register, body over 16 KiB")

    # ---- login ----
    expect(c.call("POST", "/api/login", {"name": alice, "password": "wrong password"}), 401,
           "login, wrong password")
    expect(c.call("POST", "/api/login", {"name": "nobody-" + sfx, "password": pw}), 401,
           "login, unknown name")
    expect(c.call("POST", "/api/login", {"name": alice}), 400, "login, missing password")
    a = c.call("POST", "/api/login", {"name": alice, "password": pw})
    expect(a, 200, "login")
    ok = check(isinstance(a.json, dict) and sorted(a.json) == ["expires_in", "token"] and
               isinstance(a.json.get("token"), str) and
               re.fullmatch(r"[0-9a-f]{64}", a.json["token"]) is not None and
               a.json.get("expires_in") == 86400,
               'login: body is not {"token": 64 hex, "expires_in": 86400}', a)
    if not ok:
        return
    ta = a.json["token"]
    tb = c.call("POST", "/api/login", {"name": bob, "password": pw}).json["token"]

    # ---- authentication ----
    for what, tok, hdr in [("no Authorization", None, {}),
                           ("not Bearer", None, {"Authorization": "Basic YTpi"}),
                           ("malformed token", "xyz", {}),
                           ("unknown token", "0" * 64, {}),
                           ("upper-case token", ta.upper(), {})]:
        a = c.call("GET", "/api/shifts", token=tok, headers=hdr)
        expect(a, 401, "auth, " + what)
        check((a.header("WWW-Authenticate") or "").startswith("Bearer"),
              "auth, %s: WWW-Authenticate: Bearer missing" % what, a)
    expect(c.call("GET", "/api/shifts", headers={"Authorization": "bearer " + ta}), 200,
           "auth, lower-case scheme")

    # ---- shifts ----
    a = c.call("GET", "/api/shifts", token=ta)
    expect(a, 200, "list, empty")
    check(a.json == {"shifts": [], "next": None}, 'list, empty: not {"shifts": [], "next": null}',
          a)
    given = [("early", "2026-11-24T09:00:00Z", "2026-11-24T17:00:00Z"),
             ("offset", "2026-11-25T09:00:00+01:00", "2026-11-25T17:30:00.250+01:00"),
             ("lower", "2026-11-26t09:00:00z", "2026-11-26T09:00:01Z"),
             ("leap day", "2028-02-29T22:00:00Z", "2028-03-01T06:00:00Z")]
    ids = []
    for title, s, e in given:
        a = c.call("POST", "/api/shifts", {"title": title, "starts_at": s, "ends_at": e},
                   token=ta)
        expect(a, 201, "create " + title)
        if check(is_shift(a.json, title, s, e), "create %s: not the shift as given" % title, a):
            ids.append(a.json["id"])
    check(ids == sorted(ids) and len(set(ids)) == len(ids), "create: ids not increasing")
    bad_shifts = [
        ("no title", {"starts_at": "2026-11-24T09:00:00Z", "ends_at": "2026-11-24T17:00:00Z"}),
        ("title not a string", {"title": 1, "starts_at": "2026-11-24T09:00:00Z",
                                "ends_at": "2026-11-24T17:00:00Z"}),
        ("bad starts_at", {"title": "x", "starts_at": "2026-11-24 09:00",
                           "ends_at": "2026-11-24T17:00:00Z"}),
        ("bad ends_at", {"title": "x", "starts_at": "2026-11-24T09:00:00Z",
                         "ends_at": "2026-02-30T17:00:00Z"}),
        ("bad offset", {"title": "x", "starts_at": "2026-11-24T09:00:00+24:00",
                        "ends_at": "2026-11-24T17:00:00Z"}),
        ("ends before it starts", {"title": "x", "starts_at": "2026-11-24T17:00:00Z",
                                   "ends_at": "2026-11-24T09:00:00Z"}),
        ("ends when it starts", {"title": "x", "starts_at": "2026-11-24T10:00:00+01:00",
                                 "ends_at": "2026-11-24T09:00:00Z"}),
        ("title too long", {"title": "t" * 201, "starts_at": "2026-11-24T09:00:00Z",
                            "ends_at": "2026-11-24T17:00:00Z"}),
    ]
    for what, body in bad_shifts:
        expect(c.call("POST", "/api/shifts", body, token=ta), 400, "create, " + what)
    expect(c.call("POST", "/api/shifts", raw=b"{nope", token=ta), 400, "create, malformed JSON")
    a = c.call("POST", "/api/shifts", token=None,
               body={"title": "x", "starts_at": "2026-11-24T09:00:00Z",
                     "ends_at": "2026-11-24T17:00:00Z"})
    expect(a, 401, "create without a token")

    a = c.call("GET", "/api/shifts", token=ta)
    expect(a, 200, "list")
    check(isinstance(a.json, dict) and [s.get("id") for s in a.json.get("shifts", [])] == ids and
          all(is_shift(s) for s in a.json["shifts"]) and a.json.get("next") is None,
          "list: not exactly the shifts created, by id, with next null (bad requests wrote?)", a)
    a = c.call("GET", "/api/shifts?limit=2", token=ta)
    expect(a, 200, "list, page 1")
    check([s["id"] for s in (a.json or {}).get("shifts", [])] == ids[:2] and
          a.json.get("next") == ids[1], "list, page 1: wrong page or next", a)
    a = c.call("GET", "/api/shifts?limit=2&after=%d" % ids[1], token=ta)
    expect(a, 200, "list, page 2")
    check([s["id"] for s in (a.json or {}).get("shifts", [])] == ids[2:4] and
          a.json.get("next") is None, "list, page 2: wrong page or next", a)
    a = c.call("GET", "/api/shifts?after=0&limit=200", token=ta)
    expect(a, 200, "list, after=0 limit=200")
    for q in ("limit=0", "limit=201", "limit=abc", "limit=-1", "limit=", "after=x",
              "after=-3", "after=01"):
        expect(c.call("GET", "/api/shifts?" + q, token=ta), 400, "list, " + q)

    # ---- one shift; another user's is 404, never 403 ----
    a = c.call("GET", "/api/shifts/%d" % ids[0], token=ta)
    expect(a, 200, "get own")
    check(is_shift(a.json, *given[0]), "get own: not the shift", a)
    expect(c.call("GET", "/api/shifts/%d" % ids[0], token=tb), 404, "get another user's")
    expect(c.call("DELETE", "/api/shifts/%d" % ids[0], token=tb), 404, "delete another user's")
    a = c.call("GET", "/api/shifts", token=tb)
    expect(a, 200, "list, second user")
    check(a.json == {"shifts": [], "next": None}, "list, second user: sees someone's shifts", a)
    expect(c.call("GET", "/api/shifts/999999999", token=ta), 404, "get missing")
    expect(c.call("GET", "/api/shifts/%d" % ids[0]), 401, "get without a token")
    expect(c.call("DELETE", "/api/shifts/%d" % ids[0], token=ta), 204, "delete own")
    expect(c.call("GET", "/api/shifts/%d" % ids[0], token=ta), 404, "get deleted")
    expect(c.call("DELETE", "/api/shifts/%d" % ids[0], token=ta), 404, "delete deleted")
    a = c.call("GET", "/api/shifts/%d" % ids[1], token=ta)
    expect(a, 200, "get, first user's other shift still there")

    # ---- routes, methods, request ids ----
    expect(c.call("GET", "/api/nothing"), 404, "unknown route")
    expect(c.call("GET", "/api/shifts/abc", token=ta), 404, "shift id not a number")
    for method, path, allow in [("PUT", "/api/shifts", {"GET", "POST"}),
                                ("GET", "/api/users", {"POST"}),
                                ("DELETE", "/api/login", {"POST"}),
                                ("POST", "/api/shifts/%d" % ids[1], {"GET", "DELETE"})]:
        a = c.call(method, path, token=ta)
        expect(a, 405, "%s %s" % (method, path))
        got = {m.strip() for m in (a.header("Allow") or "").split(",")}
        check(allow <= got, "%s %s: Allow does not list %s" % (method, path, sorted(allow)), a)
    a = c.call("GET", "/health", headers={"X-Request-Id": "trace-" + sfx})
    check(a.header("X-Request-Id") == "trace-" + sfx, "a plain X-Request-Id is not kept", a)
    a = c.call("GET", "/health", headers={"X-Request-Id": "bad id\twith tab"})
    check(a.header("X-Request-Id") not in (None, "bad id\twith tab"),
          "an X-Request-Id with spaces is echoed", a)


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    base = sys.argv[1]
    try:
        run(base)
    except (OSError, http.client.HTTPException) as e:
        print("functional: %s: %s" % (base, e), file=sys.stderr)
        return 2
    for f in failures:
        print("FAIL " + f)
    print("functional: %s: %d checks, %d failed" % (base, checks, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
