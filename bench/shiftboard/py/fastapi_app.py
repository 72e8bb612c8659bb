"""shiftboard's API on FastAPI, as its SQL tutorial builds an app: sync path
operations (FastAPI runs them in its thread pool, since SQLAlchemy blocks),
a session a request from a dependency with yield, closed after the answer.

    gunicorn -k uvicorn.workers.UvicornWorker -w 5 -b 127.0.0.1:8081 fastapi_app:app
"""
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

import sbcore
from sbcore import HTTPError

core = sbcore.App()
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


def request_id(request: Request):
    rid = getattr(request.state, "rid", None)
    if rid is None:
        rid = request.state.rid = sbcore.new_request_id(request.headers.get("x-request-id"))
    return rid


def headers_for(request, extra=None):
    h = {"X-Request-Id": request_id(request), "Cache-Control": "no-store"}
    h.update(extra or {})
    return h


def answer(request, status, body):
    if body is None:
        return Response(status_code=status, headers=headers_for(request),
                        media_type="application/json")
    return JSONResponse(body, status_code=status, headers=headers_for(request))


def get_db(request: Request):
    db = core.session(request_id(request))
    try:
        yield db
    finally:
        db.close()


async def raw_body(request: Request):
    cl = request.headers.get("content-length")
    if cl and cl.isdigit() and int(cl) > sbcore.MAX_BODY:
        raise HTTPError(413, "request body larger than %d bytes" % sbcore.MAX_BODY)
    body = await request.body()
    if len(body) > sbcore.MAX_BODY:
        raise HTTPError(413, "request body larger than %d bytes" % sbcore.MAX_BODY)
    return body


@app.exception_handler(HTTPError)
def on_error(request: Request, e: HTTPError):
    return JSONResponse({"error": e.message}, status_code=e.status,
                        headers=headers_for(request, e.headers))


@app.exception_handler(Exception)
def on_crash(request: Request, e: Exception):
    # still JSON, without details; the traceback goes to the log
    import traceback
    traceback.print_exc()
    return JSONResponse({"error": "internal error (request %s)" % request_id(request)},
                        status_code=500, headers=headers_for(request))


@app.exception_handler(StarletteHTTPException)
def on_http_error(request: Request, e: StarletteHTTPException):
    extra = dict(e.headers or {})
    if e.status_code == 405:
        # Starlette's Allow names only the first route on the path; list
        # every method the path has, as shiftboard does
        methods = []
        for route in app.router.routes:
            if route.matches(request.scope)[0] != Match.NONE:
                methods += [m for m in getattr(route, "methods", None) or ()
                            if m != "HEAD" and m not in methods]
        extra["Allow"] = ", ".join(methods)
        msg = "method %s not allowed here; allowed: %s" % (request.method, extra.get("Allow", ""))
    elif e.status_code == 404:
        msg = "no such route: %s" % request.url.path
    else:
        msg = str(e.detail)
    return JSONResponse({"error": msg}, status_code=e.status_code,
                        headers=headers_for(request, extra))


@app.post("/api/users")
def create_user(request: Request, raw: bytes = Depends(raw_body), db=Depends(get_db)):
    return answer(request, *sbcore.create_user(core, db, raw))


@app.post("/api/login")
def login(request: Request, raw: bytes = Depends(raw_body), db=Depends(get_db)):
    return answer(request, *sbcore.login(core, db, raw))


@app.post("/api/shifts")
def create_shift(request: Request, raw: bytes = Depends(raw_body), db=Depends(get_db)):
    uid = sbcore.authenticate(db, request.headers.get("authorization"))
    return answer(request, *sbcore.create_shift(core, db, uid, raw))


@app.get("/api/shifts")
def list_shifts(request: Request, db=Depends(get_db)):
    uid = sbcore.authenticate(db, request.headers.get("authorization"))
    q = request.query_params
    return answer(request, *sbcore.list_shifts(core, db, uid, q.get("limit"), q.get("after")))


def shift_id(request: Request, sid: str):
    n = sbcore.parse_id(sid)
    if n is None:
        raise HTTPError(404, "no such route: %s" % request.url.path)
    return n


@app.get("/api/shifts/{sid}")
def get_shift(request: Request, sid: int = Depends(shift_id), db=Depends(get_db)):
    uid = sbcore.authenticate(db, request.headers.get("authorization"))
    return answer(request, *sbcore.get_shift(core, db, uid, sid))


@app.delete("/api/shifts/{sid}")
def delete_shift(request: Request, sid: int = Depends(shift_id), db=Depends(get_db)):
    uid = sbcore.authenticate(db, request.headers.get("authorization"))
    return answer(request, *sbcore.delete_shift(core, db, uid, sid))


@app.get("/health")
def health(request: Request, db=Depends(get_db)):
    status, body = sbcore.health(core, db)
    r = answer(request, status, body)
    if status == 503:
        r.headers["Retry-After"] = "1"
    return r
