'use strict';
// The load test: 1,000 SSE subscribers (10 posts) and 100 concurrent HTTP
// clients (autocannon) liking for LOAD_SECONDS (20) through pgbouncer (10
// server connections).  Every acknowledged like must be counted exactly
// once (the database's members and counts), every subscriber must end on
// its post's final count, pgbouncer must have kept to 10 server
// connections.  Prints requests/s, latency p50/p99, SSE fan-out delay
// (feed event received - updated_at of the count); writes OUT_DIR/load.json.
const fs = require('node:fs');
const path = require('node:path');
const autocannon = require('autocannon');
const { Client } = require('pg');
const { check, finish, subscribe, sleep, waitFor, percentile } = require('./lib');

const URL = process.env.LIKES_URL;
const SECONDS = Number(process.env.LOAD_SECONDS || 20);
const CONNECTIONS = 100;
const SUBSCRIBERS = 1000;
const POSTS = Array.from({ length: 10 }, (_, i) => `load-${Date.now()}-${i}`);

(async () => {
  const db = new Client({ connectionString: process.env.DIRECT_DATABASE_URL });
  await db.connect();
  const admin = new Client({ connectionString: process.env.PGBOUNCER_ADMIN_URL });
  await admin.connect();

  // 1,000 subscribers, 100 per post
  const subs = [];
  const delays = [];
  let loadStart = Infinity;
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const sub = { post: POSTS[i % POSTS.length], last: null, events: 0 };
    sub.stream = await subscribe(URL, `/v1/stream?posts=${sub.post}`, (ev, t) => {
      const m = JSON.parse(ev.data);
      if (m.counter !== 'likes') return;
      sub.last = m.count;
      sub.events++;
      if (m.updated_at && t > loadStart) delays.push(t - Date.parse(m.updated_at));
    });
    subs.push(sub);
  }
  const open = await waitFor(() => subs.every((s) => s.last === 0), 20000);
  check(`${SUBSCRIBERS} SSE subscribers connected, each with its post's count`, open,
    subs.filter((s) => s.last !== 0).length + ' without');

  // pgbouncer and the server while the load runs
  let maxServer = 0;
  let maxClients = 0;
  let maxBackends = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await admin.query('SHOW POOLS');
      for (const r of rows.filter((r) => r.database === 'postgres')) {
        maxServer = Math.max(maxServer, ['sv_active', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login'].reduce((a, k) => a + Number(r[k]), 0));
        maxClients = Math.max(maxClients, Number(r.cl_active) + Number(r.cl_waiting));
      }
      // pgbouncer reaches the server over its Unix socket: client_addr NULL
      const b = await db.query("SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND client_addr IS NULL");
      maxBackends = Math.max(maxBackends, Number(b.rows[0].n));
      await sleep(250);
    }
  })();

  // 100 clients, each like by a new user: acknowledged = 200 with changed
  const acked = [];
  let seq = 0;
  loadStart = Date.now();
  const result = await autocannon({
    url: URL,
    connections: CONNECTIONS,
    duration: SECONDS,
    requests: [{
      method: 'PUT',
      setupRequest: (req, context) => {
        const n = seq++;
        context.post = POSTS[n % POSTS.length];
        context.user = `u${n}`;
        return { ...req, path: `/v1/${context.post}/likes/${context.user}` };
      },
      onResponse: (status, body, context) => {
        if (status === 200 && JSON.parse(body).changed) acked.push([context.post, context.user]);
      },
    }],
  });
  sampling = false;
  await sampler;

  const rps = result.requests.average;
  const p99 = result.latency.p99;
  const p50 = result.latency.p50;
  check(`the load ran: ${result.requests.total} requests, ${result['2xx']} answered 2xx`, result['2xx'] > 0 && acked.length === result['2xx'], [acked.length, result['2xx']]);
  check('no request failed (non-2xx, errors, timeouts)', result.non2xx === 0 && result.errors === 0 && result.timeouts === 0,
    { non2xx: result.non2xx, errors: result.errors, timeouts: result.timeouts });

  // exactly once: each acknowledged like is a member row, each post's count
  // is its number of member rows, and nothing but the acknowledged likes
  // (and the requests cut off in flight at the end, at most one per client)
  const ps = acked.map((a) => a[0]);
  const us = acked.map((a) => a[1]);
  const { rows: [m] } = await db.query(
    "SELECT count(*) FILTER (WHERE counter.is_member('likes', u.p, u.m)) AS found FROM unnest($1::text[], $2::text[]) AS u(p, m)", [ps, us]);
  check('every acknowledged like is in the database', Number(m.found) === acked.length, [m.found, acked.length]);
  const { rows: counts } = await db.query(
    `SELECT p.p AS post, counter.value('likes', p.p) AS value,
            (SELECT count(*) FROM counter.members x
              WHERE x.counter = 'likes' AND x.key = p.p AND x.liked) AS members
       FROM unnest($1::text[]) AS p(p)`, [POSTS]);
  const total = counts.reduce((a, r) => a + Number(r.value), 0);
  check("each post's count is its number of member rows (counted once)", counts.every((r) => Number(r.value) === Number(r.members)), counts);
  check(`the database counted the ${acked.length} acknowledged likes, plus ${total - acked.length} cut off in flight (<= ${CONNECTIONS})`,
    total >= acked.length && total - acked.length <= CONNECTIONS, [total, acked.length]);

  // the feed brings every subscriber to its post's final count
  const final = Object.fromEntries(counts.map((r) => [r.post, Number(r.value)]));
  const settled = await waitFor(() => subs.every((s) => s.last === final[s.post]), 15000);
  check('every one of the 1,000 subscribers ends on its post\'s final count', settled,
    subs.filter((s) => s.last !== final[s.post]).slice(0, 5).map((s) => [s.post, s.last, final[s.post]]));

  check(`pgbouncer: ${CONNECTIONS} clients on at most 10 server connections (max seen ${maxServer}, server backends ${maxBackends}, clients ${maxClients})`,
    maxServer > 0 && maxServer <= 10 && maxBackends <= 10 && maxClients > 10, { maxServer, maxBackends, maxClients });

  delays.sort((a, b) => a - b);
  const figures = {
    seconds: SECONDS, http_clients: CONNECTIONS, sse_subscribers: SUBSCRIBERS,
    requests: result.requests.total, requests_per_s: rps, latency_ms: { p50, p90: result.latency.p90, p99, max: result.latency.max },
    acknowledged_likes: acked.length, counted: total,
    sse_events: subs.reduce((a, s) => a + s.events, 0),
    sse_fanout_delay_ms: { p50: percentile(delays, 0.5), p99: percentile(delays, 0.99), max: delays[delays.length - 1] },
    pgbouncer: { max_server_connections: maxServer, max_clients: maxClients, max_server_backends: maxBackends },
  };
  fs.writeFileSync(path.join(process.env.OUT_DIR, 'load.json'), JSON.stringify(figures, null, 2) + '\n');
  console.log(`# load: ${rps} req/s, latency p50 ${p50} ms p99 ${p99} ms; SSE fan-out delay p50 ${figures.sse_fanout_delay_ms.p50} ms p99 ${figures.sse_fanout_delay_ms.p99} ms over ${delays.length} events`);
  console.log('# ' + JSON.stringify(figures));
  for (const s of subs) s.stream.close();
  await db.end();
  await admin.end();
  finish();
})().catch((e) => { console.log(`not ok - load test crashed: ${e.stack}`); process.exit(1); });
