"""The TechEmpower test types on FastAPI with asyncpg under uvicorn (uvloop,
httptools), one worker process per core, written the way
TechEmpower/FrameworkBenchmarks' fastapi entry writes them: a pool per
worker, a prepared statement for the world reads, executemany for the
updates, Jinja2 for the fortunes, UJSONResponse.

    DATABASE_URL=postgresql://user:pw@127.0.0.1:5432/db \\
        /usr/bin/python3 bench/tfb/python/run.py --listen 127.0.0.1:8080 [--pool N] [--workers N]

(run.py starts uvicorn with this app; TFB_POOL is the pool size of each
worker.)
"""
import os
from operator import itemgetter
from random import randint, sample

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, UJSONResponse
from fastapi.templating import Jinja2Templates

ADDITIONAL_FORTUNE = [0, "Additional fortune added at request time."]
READ_ROW_SQL = 'SELECT "randomnumber", "id" FROM "world" WHERE id = $1'
WRITE_ROW_SQL = 'UPDATE "world" SET "randomnumber"=$2 WHERE id=$1'

sort_fortunes_key = itemgetter(1)
templates = Jinja2Templates(directory=os.path.join(os.path.dirname(os.path.realpath(__file__)),
                                                   "templates"))
app = FastAPI()  # uvicorn adds the Server and Date headers


def get_num_queries(queries):
    try:
        query_count = int(queries)
    except (ValueError, TypeError):
        return 1
    if query_count < 1:
        return 1
    if query_count > 500:
        return 500
    return query_count


@app.on_event("startup")
async def startup_event():
    size = int(os.environ.get("TFB_POOL", "4"))
    app.state.pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=size,
                                               max_size=size, ssl=False)


@app.on_event("shutdown")
async def shutdown_event():
    await app.state.pool.close()


@app.get("/json")
async def json_serialization():
    return UJSONResponse({"message": "Hello, World!"})


@app.get("/db")
async def single_database_query():
    row_id = randint(1, 10000)
    async with app.state.pool.acquire() as connection:
        number = await connection.fetchval(READ_ROW_SQL, row_id)
    return UJSONResponse({"id": row_id, "randomNumber": number})


@app.get("/queries")
async def multiple_database_queries(queries=None):
    num_queries = get_num_queries(queries)
    row_ids = [randint(1, 10000) for _ in range(num_queries)]
    worlds = []
    async with app.state.pool.acquire() as connection:
        statement = await connection.prepare(READ_ROW_SQL)
        for row_id in row_ids:
            number = await statement.fetchval(row_id)
            worlds.append({"id": row_id, "randomNumber": number})
    return UJSONResponse(worlds)


@app.get("/fortunes")
async def fortunes(request: Request):
    async with app.state.pool.acquire() as connection:
        fortunes = await connection.fetch("SELECT * FROM Fortune")
    fortunes.append(ADDITIONAL_FORTUNE)
    fortunes.sort(key=sort_fortunes_key)
    return templates.TemplateResponse("fortune.html", {"request": request, "fortunes": fortunes})


@app.get("/updates")
async def database_updates(queries=None):
    num_queries = get_num_queries(queries)
    # distinct ids, sorted, so that concurrent requests cannot deadlock
    ids = sorted(sample(range(1, 10000 + 1), num_queries))
    numbers = [randint(1, 10000) for _ in range(num_queries)]
    updates = list(zip(ids, numbers))
    worlds = [{"id": row_id, "randomNumber": number} for row_id, number in updates]
    async with app.state.pool.acquire() as connection:
        statement = await connection.prepare(READ_ROW_SQL)
        for row_id, _ in updates:
            await statement.fetchval(row_id)
        await connection.executemany(WRITE_ROW_SQL, updates)
    return UJSONResponse(worlds)


@app.get("/plaintext")
async def plaintext():
    return PlainTextResponse(b"Hello, World!")
