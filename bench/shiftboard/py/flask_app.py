"""shiftboard's API on Flask, the way Flask apps use SQLAlchemy: a session a
request, opened before the view and closed at teardown.

    gunicorn -w 5 -b 127.0.0.1:8082 flask_app:app      (sync workers)
"""
import json

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

import sbcore
from sbcore import HTTPError

core = sbcore.App()
app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = sbcore.MAX_BODY


def answer(status, body, headers=None):
    r = Response("" if body is None else json.dumps(body, separators=(",", ":")),
                 status=status, mimetype="application/json")
    for k, v in (headers or {}).items():
        r.headers[k] = v
    return r


@app.before_request
def open_session():
    g.rid = sbcore.new_request_id(request.headers.get("X-Request-Id"))
    # Werkzeug 2.2 enforces MAX_CONTENT_LENGTH only when parsing forms
    if (request.content_length or 0) > sbcore.MAX_BODY:
        raise HTTPError(413, "request body larger than %d bytes" % sbcore.MAX_BODY)
    g.db = core.session(g.rid)


@app.teardown_request
def close_session(_exc):
    db = g.pop("db", None)
    if db is not None:
        db.close()


@app.after_request
def common_headers(r):
    r.headers["X-Request-Id"] = g.get("rid") or sbcore.new_request_id(None)
    r.headers["Cache-Control"] = "no-store"
    return r


@app.errorhandler(HTTPError)
def on_error(e):
    return answer(e.status, {"error": e.message}, e.headers)


@app.errorhandler(HTTPException)
def on_http_error(e):
    headers = {}
    if e.code == 405:
        allow = [m for m in e.valid_methods if m not in ("HEAD", "OPTIONS")]
        headers["Allow"] = ", ".join(allow)
        msg = "method %s not allowed here; allowed: %s" % (request.method, headers["Allow"])
    elif e.code == 404:
        msg = "no such route: %s" % request.path
    elif e.code == 413:
        msg = "request body larger than %d bytes" % sbcore.MAX_BODY
    else:
        msg = e.description
    return answer(e.code, {"error": msg}, headers)


@app.errorhandler(Exception)
def on_crash(e):
    # still JSON, without details; the traceback goes to the log
    app.logger.exception("request %s", g.get("rid"))
    return answer(500, {"error": "internal error (request %s)" % g.get("rid")})


def shift_id(sid):
    n = sbcore.parse_id(sid)
    if n is None:
        raise HTTPError(404, "no such route: %s" % request.path)
    return n


@app.post("/api/users")
def create_user():
    return answer(*sbcore.create_user(core, g.db, request.get_data()))


@app.post("/api/login")
def login():
    return answer(*sbcore.login(core, g.db, request.get_data()))


@app.post("/api/shifts")
def create_shift():
    uid = sbcore.authenticate(g.db, request.headers.get("Authorization"))
    return answer(*sbcore.create_shift(core, g.db, uid, request.get_data()))


@app.get("/api/shifts")
def list_shifts():
    uid = sbcore.authenticate(g.db, request.headers.get("Authorization"))
    a = request.args
    return answer(*sbcore.list_shifts(core, g.db, uid, a.get("limit"), a.get("after")))


@app.get("/api/shifts/<sid>")
def get_shift(sid):
    n = shift_id(sid)
    uid = sbcore.authenticate(g.db, request.headers.get("Authorization"))
    return answer(*sbcore.get_shift(core, g.db, uid, n))


@app.delete("/api/shifts/<sid>")
def delete_shift(sid):
    n = shift_id(sid)
    uid = sbcore.authenticate(g.db, request.headers.get("Authorization"))
    return answer(*sbcore.delete_shift(core, g.db, uid, n))


@app.get("/health")
def health():
    status, body = sbcore.health(core, g.db)
    return answer(status, body, {"Retry-After": "1"} if status == 503 else None)
