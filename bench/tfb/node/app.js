// The TechEmpower test types on Node.js's http module with the `postgres`
// client (porsager's: queries are prepared and pipelined on its
// connections), one worker per core through node:cluster, written the way
// TechEmpower/FrameworkBenchmarks' nodejs entry (postgresjs-raw) writes them.
//
//   DATABASE_URL=postgres://user:pw@127.0.0.1:5432/db node app.js \
//       --listen 127.0.0.1:8080 [--pool N (connections per worker)] [--workers N]
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const { availableParallelism } = require('node:os');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const workers = Number(arg('--workers', availableParallelism()));
const listen = arg('--listen', '127.0.0.1:8080');

if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} died (${signal || code})`);
    process.exit(1);
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
      process.exit(0);
    });
  }
} else {
  worker();
}

function worker() {
  const postgres = require('postgres');
  if (!process.env.DATABASE_URL) {
    console.error('set DATABASE_URL (postgres://user:password@host:port/db)');
    process.exit(2);
  }
  const sql = postgres(process.env.DATABASE_URL, {
    max: Number(arg('--pool', 1)),
    ssl: false,
  });

  const GREETING = 'Hello, World!';
  const EXTRA = { id: 0, message: 'Additional fortune added at request time.' };
  const random = () => Math.floor(Math.random() * 10000) + 1;

  const dbfind = (id) =>
    sql`SELECT id, randomNumber FROM world WHERE id = ${id}`.then((r) => ({
      id: r[0].id, randomNumber: r[0].randomnumber,
    }));
  const dbfortunes = () => sql`SELECT id, message FROM fortune`;
  const dbbulkUpdate = (worlds) => {
    const rows = sql(worlds.map((w) => [w.id, w.randomNumber]).sort((a, b) => a[0] - b[0]));
    return sql`UPDATE world SET randomNumber = (update_data.randomNumber)::int
      FROM (VALUES ${rows}) AS update_data (id, randomNumber)
      WHERE world.id = (update_data.id)::int`;
  };

  // the query count, 1..500, 1 for anything not a number
  function queriesParam(url) {
    const m = /[?&]queries=([^&]*)/.exec(url);
    const n = m ? parseInt(m[1], 10) : NaN;
    if (!(n >= 1)) return 1;
    return n > 500 ? 500 : n;
  }

  const escapes = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' };
  const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => escapes[c]);

  function send(res, body, type) {
    res.writeHead(200, {
      'Server': 'Node',
      'Content-Type': type,
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }
  const json = (res, v) => send(res, JSON.stringify(v), 'application/json');
  function fail(res, err) {
    res.writeHead(500, { 'Server': 'Node', 'Content-Type': 'text/plain' });
    res.end(String(err && err.message || err));
  }

  async function handle(req, res) {
    const url = req.url;
    const path = url.split('?', 1)[0];
    switch (path) {
      case '/json':
        return json(res, { message: GREETING });
      case '/plaintext':
        return send(res, GREETING, 'text/plain');
      case '/db':
        return json(res, await dbfind(random()));
      case '/queries': {
        const n = queriesParam(url);
        const jobs = new Array(n);
        for (let i = 0; i < n; i++) jobs[i] = dbfind(random());
        return json(res, await Promise.all(jobs));
      }
      case '/updates': {
        const n = queriesParam(url);
        const jobs = new Array(n);
        for (let i = 0; i < n; i++) jobs[i] = dbfind(random());
        const worlds = await Promise.all(jobs);
        for (let i = 0; i < n; i++) worlds[i].randomNumber = random();
        await dbbulkUpdate(worlds);
        return json(res, worlds);
      }
      case '/fortunes': {
        const rows = [EXTRA, ...(await dbfortunes())];
        rows.sort((a, b) => (a.message < b.message ? -1 : a.message > b.message ? 1 : 0));
        let html = '';
        for (const r of rows) html += `<tr><td>${r.id}</td><td>${escapeHtml(r.message)}</td></tr>`;
        return send(res,
          '<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>' +
          `<tr><th>id</th><th>message</th></tr>${html}</table></body></html>`,
          'text/html; charset=utf-8');
      }
      default:
        res.writeHead(404, { 'Server': 'Node', 'Content-Type': 'text/plain' });
        return res.end('not found');
    }
  }

  const i = listen.lastIndexOf(':');
  http.createServer((req, res) => { handle(req, res).catch((e) => fail(res, e)); })
    .listen(Number(listen.slice(i + 1)), listen.slice(0, i));
}
