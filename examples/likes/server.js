'use strict';
// The likes service: an HTTP API over the counter extension, live counts
// by server-sent events, Prometheus metrics.  No framework: node:http and
// node-postgres (pg).
//
//   API_DATABASE_URL   the API calls' pool: through pgbouncer (transaction
//                      pooling) or direct; one statement per request
//   FEED_DATABASE_URL  the one LISTEN connection of this process: direct
//                      (LISTEN does not survive transaction pooling)
//   PORT, HOST         where to listen (default 8080, 127.0.0.1)
//   POOL_MAX           connections of the API pool (default 20)
//
// Every count change reaches the subscribed browsers through the
// extension's change feed: compaction NOTIFYs counter.channel(name) with
// JSON entries {counter, key, updated_at, value}; this process LISTENs on
// them once and fans each entry out to the streams subscribed to its post.
// An entry older than what a stream was last sent (updated_at) is dropped,
// so a count never goes backwards on the page.

const http = require('node:http');
const fs = require('node:fs');
const path = require('node:path');
const { Pool, Client, types } = require('pg');

// timestamptz as text, kept to the microsecond (a JS Date has only ms)
types.setTypeParser(1184, (v) => v);

// A PostgreSQL time ("2026-12-02 01:49:07.223892+00" or the feed's JSON
// "2026-12-02T01:49:07.223892+00:00") as ISO 8601 UTC with microseconds:
// the API's and the feed's updated_at compare equal, and in time order as
// strings.
function isoUtc(s) {
  if (s == null) return null;
  const m = /^(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d)(?:\.(\d+))?([+-]\d\d)(?::?(\d\d))?$/.exec(s);
  if (!m) return s;
  const frac = (m[3] || '').padEnd(6, '0');
  const ms = Date.parse(`${m[1]}T${m[2]}${m[4]}:${m[5] || '00'}`);
  return new Date(ms).toISOString().slice(0, 19) + '.' + frac + 'Z';
}

const PORT = Number(process.env.PORT || 8080);
const HOST = process.env.HOST || '127.0.0.1';
const API_URL = process.env.API_DATABASE_URL || process.env.DATABASE_URL;
const FEED_URL = process.env.FEED_DATABASE_URL || API_URL;
const COUNTERS = ['likes', 'post_counter'];
const ID_RE = /^[A-Za-z0-9._~-]{1,200}$/;
const INDEX_HTML = fs.readFileSync(path.join(__dirname, 'public', 'index.html'));

const pool = new Pool({
  connectionString: API_URL,
  max: Number(process.env.POOL_MAX || 20),
  connectionTimeoutMillis: 5000,
  idleTimeoutMillis: 10000,
  application_name: 'likes-api',
});
// an idle client's error (server gone) must not kill the process
pool.on('error', () => {});

// --- metrics ------------------------------------------------------------

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const requests = new Map();   // "route|method|status" -> count
const latency = new Map();    // route -> { buckets[], sum, count }
const feed = { notifications: 0, entries: 0, events_sent: 0, connected: 0, reconnects: 0 };

function observe(route, method, status, seconds) {
  const k = `${route}|${method}|${status}`;
  requests.set(k, (requests.get(k) || 0) + 1);
  let h = latency.get(route);
  if (!h) latency.set(route, (h = { buckets: BUCKETS.map(() => 0), sum: 0, count: 0 }));
  BUCKETS.forEach((b, i) => { if (seconds <= b) h.buckets[i]++; });
  h.sum += seconds;
  h.count++;
}

const STATS_COLUMNS = ['keys', 'pending_events', 'slot_rows', 'buffered_unflushed',
  'events_compacted_per_s', 'quarantined_keys'];

async function metricsText() {
  const out = [];
  out.push('# HELP likes_http_requests_total HTTP requests by route, method and status.');
  out.push('# TYPE likes_http_requests_total counter');
  for (const [k, v] of requests) {
    const [route, method, status] = k.split('|');
    out.push(`likes_http_requests_total{route="${route}",method="${method}",status="${status}"} ${v}`);
  }
  out.push('# HELP likes_http_request_duration_seconds HTTP request latency by route.');
  out.push('# TYPE likes_http_request_duration_seconds histogram');
  for (const [route, h] of latency) {
    BUCKETS.forEach((b, i) => out.push(`likes_http_request_duration_seconds_bucket{route="${route}",le="${b}"} ${h.buckets[i]}`));
    out.push(`likes_http_request_duration_seconds_bucket{route="${route}",le="+Inf"} ${h.count}`);
    out.push(`likes_http_request_duration_seconds_sum{route="${route}"} ${h.sum}`);
    out.push(`likes_http_request_duration_seconds_count{route="${route}"} ${h.count}`);
  }
  out.push('# HELP likes_sse_subscribers Open server-sent event streams.');
  out.push('# TYPE likes_sse_subscribers gauge');
  out.push(`likes_sse_subscribers ${streams.size}`);
  out.push('# HELP likes_sse_subscriptions Subscriptions of open streams to posts.');
  out.push('# TYPE likes_sse_subscriptions gauge');
  let subs = 0;
  for (const set of byPost.values()) subs += set.size;
  out.push(`likes_sse_subscriptions ${subs}`);
  out.push('# HELP likes_sse_events_sent_total Count events written to streams.');
  out.push('# TYPE likes_sse_events_sent_total counter');
  out.push(`likes_sse_events_sent_total ${feed.events_sent}`);
  out.push('# HELP likes_feed_notifications_total Change-feed notifications received.');
  out.push('# TYPE likes_feed_notifications_total counter');
  out.push(`likes_feed_notifications_total ${feed.notifications}`);
  out.push('# HELP likes_feed_connected Whether the LISTEN connection is up.');
  out.push('# TYPE likes_feed_connected gauge');
  out.push(`likes_feed_connected ${feed.connected}`);
  out.push('# HELP likes_feed_reconnects_total LISTEN connections made after the first.');
  out.push('# TYPE likes_feed_reconnects_total counter');
  out.push(`likes_feed_reconnects_total ${feed.reconnects}`);
  out.push('# HELP likes_db_pool_connections API pool connections (total, idle, waiting requests).');
  out.push('# TYPE likes_db_pool_connections gauge');
  out.push(`likes_db_pool_connections{state="total"} ${pool.totalCount}`);
  out.push(`likes_db_pool_connections{state="idle"} ${pool.idleCount}`);
  out.push(`likes_db_pool_connections{state="waiting"} ${pool.waitingCount}`);
  try {
    const { rows } = await pool.query(
      `SELECT name, ${STATS_COLUMNS.join(', ')},
              coalesce(extract(epoch FROM oldest_pending_age), 0) AS oldest_pending_age_seconds
         FROM counter.stats WHERE name = ANY ($1)`, [COUNTERS]);
    for (const col of [...STATS_COLUMNS, 'oldest_pending_age_seconds']) {
      out.push(`# HELP likes_counter_${col} counter.stats.${col} of the example's counters.`);
      out.push(`# TYPE likes_counter_${col} gauge`);
      for (const r of rows) out.push(`likes_counter_${col}{counter="${r.name}"} ${Number(r[col] || 0)}`);
    }
    out.push('# HELP likes_counter_stats_up Whether counter.stats could be read.');
    out.push('# TYPE likes_counter_stats_up gauge');
    out.push('likes_counter_stats_up 1');
  } catch (e) {
    out.push('# TYPE likes_counter_stats_up gauge');
    out.push('likes_counter_stats_up 0');
  }
  return out.join('\n') + '\n';
}

// --- errors -------------------------------------------------------------

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// HTTP status of a database error, by SQLSTATE (and node's socket codes).
function statusOf(e) {
  if (e instanceof HttpError) return e.status;
  const code = e && e.code;
  if (!code) return 503;                              // no answer: connection refused, timeout
  if (/^(ECONN|ETIMEDOUT|ENOTFOUND|EPIPE|EHOSTUNREACH)/.test(code)) return 503;
  if (/^(08|53|57P0|58)/.test(code)) return 503;      // connection, resources, shutdown, system
  if (code === '42704') return 404;                   // counter ... does not exist
  if (code === '42501') return 403;
  if (code === '22023' && /already used for another add/.test(e.message)) return 409;
  if (code === '23514' || code === '40001' || code === '40P01') return 409;
  if (/^22/.test(code)) return 400;                   // bad input: null, too long, out of range
  return 500;
}

function send(res, status, body, headers = {}) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c) => {
      data += c;
      if (data.length > 10000) reject(new HttpError(413, 'body too large'));
    });
    req.on('end', () => {
      if (data === '') return resolve({});
      try { resolve(JSON.parse(data)); } catch { reject(new HttpError(400, 'body is not JSON')); }
    });
    req.on('error', reject);
  });
}

function checkId(what, v) {
  if (!ID_RE.test(v)) throw new HttpError(400, `${what} must be 1 to 200 characters of [A-Za-z0-9._~-]`);
  return v;
}

function countBody(row) {
  return { count: Number(row.count), updated_at: isoUtc(row.updated_at) };
}

// --- API ----------------------------------------------------------------

async function apiCounter(req, res, post) {
  if (req.method === 'GET') {
    const { rows } = await pool.query('SELECT * FROM likes_api.read($1)', [post]);
    return send(res, 200, countBody(rows[0]));
  }
  if (req.method !== 'PUT') throw new HttpError(405, 'use GET or PUT');
  const body = await readJson(req);
  const delta = { increment: 1, decrement: -1 }[body && body.action];
  if (!delta) throw new HttpError(400, 'action must be "increment" or "decrement"');
  const idem = req.headers['idempotency-key'] || null;
  if (idem !== null && (idem.length === 0 || idem.length > 200))
    throw new HttpError(400, 'Idempotency-Key must be 1 to 200 characters');
  const { rows } = await pool.query('SELECT * FROM likes_api.bump($1, $2, $3)', [post, delta, idem]);
  return send(res, 200, countBody(rows[0]));
}

async function apiLike(req, res, post, user) {
  if (req.method === 'GET') {
    const { rows } = await pool.query('SELECT * FROM likes_api.get_like($1, $2)', [post, user]);
    return send(res, 200, { liked: rows[0].liked, ...countBody(rows[0]) });
  }
  if (req.method !== 'PUT' && req.method !== 'DELETE') throw new HttpError(405, 'use GET, PUT or DELETE');
  const { rows } = await pool.query('SELECT * FROM likes_api.set_like($1, $2, $3)',
    [post, user, req.method === 'PUT']);
  return send(res, 200, { liked: req.method === 'PUT', changed: rows[0].changed, ...countBody(rows[0]) });
}

// --- server-sent events -------------------------------------------------

const streams = new Set();     // open streams: { res, posts, last: Map(counter|post -> {t: updated_at, v}) }
const byPost = new Map();      // post -> Set of streams
let eventId = 0;

// Write one count to a stream unless it already has a newer one.
function push(stream, counter, post, count, updatedAt) {
  const k = `${counter}|${post}`;
  const t = updatedAt || '';
  const last = stream.last.get(k);
  if (last && (last.t > t || (last.t === t && last.v === count))) return;
  stream.last.set(k, { t, v: count });
  eventId++;
  stream.res.write(`id: ${eventId}\nevent: count\ndata: ${JSON.stringify({ counter, post, count, updated_at: updatedAt })}\n\n`);
  feed.events_sent++;
}

// The current counts of posts, pushed to the given streams.
async function pushSnapshot(posts, targets) {
  const { rows } = await pool.query('SELECT * FROM likes_api.snapshot($1)', [posts]);
  for (const r of rows)
    for (const s of targets)
      if (s.posts.includes(r.post))
        push(s, r.counter, r.post, Number(r.count), isoUtc(r.updated_at));
}

// GET /v1/stream?posts=a,b: every count change of those posts.  The first
// events are the current counts, so a browser that reconnects (EventSource
// does by itself, sending Last-Event-ID) has the latest values at once.
async function apiStream(req, res, url) {
  const posts = [...new Set((url.searchParams.get('posts') || '').split(',').filter(Boolean))];
  if (posts.length === 0 || posts.length > 100) throw new HttpError(400, 'posts must list 1 to 100 post ids');
  posts.forEach((p) => checkId('post id', p));
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.write('retry: 1000\n\n');
  const stream = { res, posts, last: new Map() };
  streams.add(stream);
  for (const p of posts) {
    if (!byPost.has(p)) byPost.set(p, new Set());
    byPost.get(p).add(stream);
  }
  const ping = setInterval(() => res.write(': ping\n\n'), 15000);
  req.on('close', () => {
    clearInterval(ping);
    streams.delete(stream);
    for (const p of posts) {
      const set = byPost.get(p);
      set.delete(stream);
      if (set.size === 0) byPost.delete(p);
    }
  });
  try {
    await pushSnapshot(posts, [stream]);
  } catch (e) {
    res.write(`event: error\ndata: ${JSON.stringify({ error: 'database unavailable' })}\n\n`);
  }
}

// The one LISTEN connection: direct to PostgreSQL, reconnected with
// backoff, and at once when a channel is rotated (its last notification is
// an empty array); after a reconnect the channels are asked again and
// every subscribed post's count is read again (notifications sent while it
// was down are lost).
async function startFeed() {
  let delay = 100;
  let first = true;
  for (;;) {
    const client = new Client({ connectionString: FEED_URL, application_name: 'likes-feed' });
    try {
      await client.connect();
      const closed = new Promise((resolve) => { client.on('error', resolve); client.on('end', resolve); });
      client.on('notification', (msg) => {
        feed.notifications++;
        // [] on a channel: counter.revoke() rotated it; listen again
        if (msg.payload === '[]') return client.end().catch(() => {});
        let entries;
        try { entries = JSON.parse(msg.payload); } catch { return; }
        for (const e of entries) {
          feed.entries++;
          const set = byPost.get(e.key);
          if (!set) continue;
          for (const s of set) push(s, e.counter, e.key, Number(e.value), isoUtc(e.updated_at));
        }
      });
      for (const name of COUNTERS) {
        const { rows } = await client.query('SELECT counter.channel($1) AS ch', [name]);
        await client.query(`LISTEN "${rows[0].ch}"`);
      }
      feed.connected = 1;
      if (!first) feed.reconnects++;
      first = false;
      delay = 100;
      if (byPost.size > 0) await pushSnapshot([...byPost.keys()], [...streams]).catch(() => {});
      await closed;
    } catch (e) {
      // fall through to the reconnect
    }
    feed.connected = 0;
    client.end().catch(() => {});
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

// --- routing ------------------------------------------------------------

async function handle(req, res) {
  const url = new URL(req.url, 'http://x');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (url.pathname === '/' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return res.end(INDEX_HTML) && 'page';
  }
  if (url.pathname === '/metrics') {
    const text = await metricsText();
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(text);
    return 'metrics';
  }
  if (url.pathname === '/healthz') {
    await pool.query('SELECT 1');
    send(res, 200, { ok: true, feed: feed.connected === 1 });
    return 'healthz';
  }
  if (parts[0] === 'v1' && parts[1] === 'stream' && parts.length === 2 && req.method === 'GET') {
    await apiStream(req, res, url);
    return 'stream';
  }
  if (parts[0] === 'v1' && parts[2] === 'counter' && parts.length === 3) {
    await apiCounter(req, res, parts[1]);
    return 'counter';
  }
  if (parts[0] === 'v1' && parts[2] === 'likes' && parts.length === 4) {
    await apiLike(req, res, parts[1], checkId('user id', parts[3]));
    return 'likes';
  }
  throw new HttpError(404, 'no such route');
}

const server = http.createServer((req, res) => {
  const start = process.hrtime.bigint();
  let route = 'other';
  handle(req, res).then((r) => { route = r || route; }, (e) => {
    const status = statusOf(e);
    if (status === 500) console.error(`${req.method} ${req.url}: ${e.code || ''} ${e.message}`);
    route = /\/counter$/.test(req.url) ? 'counter' : /\/likes\//.test(req.url) ? 'likes' : route;
    const message = e instanceof HttpError || (status !== 500 && status !== 503) ? e.message
      : status === 503 ? 'database unavailable' : 'internal error';
    if (!res.headersSent) send(res, status, { error: message, ...(e.code && !(e instanceof HttpError) ? { sqlstate: e.code } : {}) },
      status === 503 ? { 'retry-after': '1' } : {});
    else res.end();
  }).finally(() => {
    if (route !== 'stream')
      observe(route, req.method, res.statusCode, Number(process.hrtime.bigint() - start) / 1e9);
  });
});
server.keepAliveTimeout = 65000;

server.listen(PORT, HOST, () => {
  console.log(`likes service listening on http://${HOST}:${server.address().port}/`);
});
startFeed();

for (const sig of ['SIGTERM', 'SIGINT'])
  process.on(sig, () => {
    for (const s of streams) s.res.end();
    server.close();
    pool.end().finally(() => process.exit(0));
  });
