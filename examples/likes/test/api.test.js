'use strict';
// API tests against the running service (LIKES_URL, its API calls through
// pgbouncer), a second instance whose database is unreachable (DEAD_URL),
// and the database directly (DIRECT_DATABASE_URL) for what only it knows.
const { Client } = require('pg');
const { check, finish, call, subscribe, waitFor } = require('./lib');

const URL = process.env.LIKES_URL;
const DEAD = process.env.DEAD_URL;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;
const noStack = (r) => !/\n\s+at /.test(r.text) && r.json && typeof r.json.error === 'string';

(async () => {
  const db = new Client({ connectionString: process.env.DIRECT_DATABASE_URL });
  await db.connect();
  const post = 'api-' + Date.now();

  // increment / decrement / read: {count, updated_at}
  let r = await call(URL, 'GET', `/v1/${post}/counter`);
  check('GET of a post never counted: 200 {count: 0, updated_at: null}', r.status === 200 && r.json.count === 0 && r.json.updated_at === null, r.json);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' } });
  check('PUT increment: 200 {count: 1, updated_at}', r.status === 200 && r.json.count === 1 && ISO.test(r.json.updated_at), r.json);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' } });
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'decrement' } });
  const last = r.json;
  check('PUT decrement: the count after it', r.status === 200 && r.json.count === 1, r.json);
  r = await call(URL, 'GET', `/v1/${post}/counter`);
  check('GET: the same count and updated_at as the last PUT answered', r.status === 200 && r.json.count === 1 && r.json.updated_at === last.updated_at, [r.json, last]);
  const { rows: [g] } = await db.query("SELECT value, updated_at FROM counter.get('post_counter', $1)", [post]);
  check('the answer is counter.get() of the database (to the microsecond)', Number(g.value) === 1 && g.updated_at.toISOString().slice(0, 23) === last.updated_at.slice(0, 23), [g, last]);

  // Idempotency-Key: a retry adds nothing; the key with another delta: 409
  const key = 'idem-' + post;
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' }, headers: { 'idempotency-key': key } });
  check('PUT with an Idempotency-Key: counted', r.status === 200 && r.json.count === 2, r.json);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' }, headers: { 'idempotency-key': key } });
  check('the same PUT retried with its key: not counted again', r.status === 200 && r.json.count === 2, r.json);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'decrement' }, headers: { 'idempotency-key': key } });
  check('the key reused for another delta: 409, no stack trace', r.status === 409 && noStack(r), [r.status, r.text]);

  // 400s
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'double' } });
  check('an unknown action: 400', r.status === 400 && noStack(r), [r.status, r.text]);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: '{not json' });
  check('a body that is not JSON: 400', r.status === 400 && noStack(r), [r.status, r.text]);
  r = await call(URL, 'PUT', `/v1/${'p'.repeat(1500)}/counter`, { body: { action: 'increment' } });
  check('a post id the extension refuses (key over 1024 bytes): 400 with its SQLSTATE', r.status === 400 && noStack(r) && /^22/.test(r.json.sqlstate), [r.status, r.text]);
  r = await call(URL, 'PUT', `/v1/${post}/likes/bad%20user!`);
  check('a malformed user id: 400', r.status === 400 && noStack(r), [r.status, r.text]);
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' }, headers: { 'idempotency-key': 'k'.repeat(300) } });
  check('an Idempotency-Key too long: 400', r.status === 400 && noStack(r), [r.status, r.text]);

  // likes by member: a member counts once
  r = await call(URL, 'PUT', `/v1/${post}/likes/alice`);
  check('PUT like: 200 {liked, changed, count: 1}', r.status === 200 && r.json.liked === true && r.json.changed === true && r.json.count === 1 && ISO.test(r.json.updated_at), r.json);
  r = await call(URL, 'PUT', `/v1/${post}/likes/alice`);
  check('the same like again: changed false, still 1', r.status === 200 && r.json.changed === false && r.json.count === 1, r.json);
  r = await call(URL, 'PUT', `/v1/${post}/likes/bob`);
  check('another member: 2', r.status === 200 && r.json.count === 2, r.json);
  r = await call(URL, 'GET', `/v1/${post}/likes/alice`);
  check('GET like: liked true, count 2', r.status === 200 && r.json.liked === true && r.json.count === 2, r.json);
  r = await call(URL, 'DELETE', `/v1/${post}/likes/alice`);
  check('DELETE like: changed, 1', r.status === 200 && r.json.changed === true && r.json.count === 1, r.json);
  r = await call(URL, 'DELETE', `/v1/${post}/likes/alice`);
  check('DELETE again: changed false, 1', r.status === 200 && r.json.changed === false && r.json.count === 1, r.json);
  r = await call(URL, 'GET', `/v1/${post}/likes/alice`);
  check('GET like after DELETE: liked false', r.status === 200 && r.json.liked === false, r.json);
  const likedAt = (await call(URL, 'PUT', `/v1/${post}/likes/carol`)).json;

  // 404s
  r = await call(URL, 'GET', '/v1/nothing/here/at/all');
  check('an unknown route: 404', r.status === 404 && noStack(r), [r.status, r.text]);

  // server-sent events: the current value first, then the feed's
  const events = [];
  const s = await subscribe(URL, `/v1/stream?posts=${post}`, (ev, t) => events.push({ ...JSON.parse(ev.data), id: ev.id, t }));
  check('GET /v1/stream: 200 text/event-stream', s.status === 200);
  await waitFor(() => events.some((e) => e.counter === 'likes'), 5000);
  const first = events.find((e) => e.counter === 'likes');
  check('a stream starts with the current count and its updated_at', first && first.count === 2 && first.updated_at === likedAt.updated_at, events);
  const t0 = Date.now();
  const put = (await call(URL, 'PUT', `/v1/${post}/likes/dave`)).json;
  const ev = await waitFor(() => events.find((e) => e.counter === 'likes' && e.count === 3), 5000);
  check('a like reaches the stream through the change feed', ev, events);
  check("the feed's updated_at is the API's updated_at (counter.get and the feed agree)", ev && ev.updated_at === put.updated_at, [ev, put]);
  if (ev) console.log(`# SSE fan-out delay of one like (API answer to event): ${ev.t - t0} ms`);
  s.close();
  // a browser reconnecting with Last-Event-ID gets the latest value at once
  const again = [];
  const s2 = await subscribe(URL, `/v1/stream?posts=${post}`, (e) => again.push(JSON.parse(e.data)), { 'last-event-id': String(ev ? ev.id : 0) });
  await waitFor(() => again.some((e) => e.counter === 'likes'), 5000);
  check('a reconnecting stream (Last-Event-ID) starts with the latest count', again.some((e) => e.counter === 'likes' && e.count === 3), again);
  s2.close();
  r = await call(URL, 'GET', '/v1/stream');
  check('a stream without posts: 400', r.status === 400 && noStack(r), [r.status, r.text]);

  // metrics
  r = await call(URL, 'GET', '/metrics');
  check('/metrics: Prometheus text with requests, latencies, SSE subscribers, counter.stats',
    r.status === 200 && /^likes_http_requests_total\{route="likes",method="PUT",status="200"\} \d+$/m.test(r.text)
    && /^likes_http_request_duration_seconds_bucket\{route="counter",le="0.1"\} \d+$/m.test(r.text)
    && /^likes_sse_subscribers \d+$/m.test(r.text)
    && /^likes_counter_keys\{counter="likes"\} [1-9]\d*$/m.test(r.text)
    && /^likes_counter_stats_up 1$/m.test(r.text), r.text.slice(0, 3000));

  // 503: an instance whose database cannot be reached
  r = await call(DEAD, 'GET', `/v1/${post}/counter`);
  check('database down: 503 with Retry-After, no stack trace', r.status === 503 && r.headers['retry-after'] === '1' && noStack(r), [r.status, r.text]);
  r = await call(DEAD, 'PUT', `/v1/${post}/likes/alice`);
  check('database down, a like: 503', r.status === 503 && noStack(r), [r.status, r.text]);

  // 404: an unknown counter (dropped under the running service, then made again)
  await db.query("SELECT counter.drop('post_counter')");
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' } });
  check('an unknown counter: 404 with SQLSTATE 42704', r.status === 404 && r.json.sqlstate === '42704' && noStack(r), [r.status, r.text]);
  await db.query("SELECT counter.create('post_counter', mode => 'events', feed => true)");
  r = await call(URL, 'PUT', `/v1/${post}/counter`, { body: { action: 'increment' } });
  check('made again: counting from 0', r.status === 200 && r.json.count === 1, r.json);

  // a revoke rotates the feed's channel: the service listens on the new one
  await db.query('DROP ROLE IF EXISTS likes_test_nobody; CREATE ROLE likes_test_nobody');
  const rotated = [];
  const s3 = await subscribe(URL, `/v1/stream?posts=${post}`, (e) => rotated.push(JSON.parse(e.data)));
  await waitFor(() => rotated.some((e) => e.counter === 'likes'), 5000);
  await db.query("SELECT counter.revoke('likes', 'likes_test_nobody', 'read')");
  await waitFor(async () => /^likes_feed_reconnects_total [1-9]/m.test((await call(URL, 'GET', '/metrics')).text), 5000);
  await call(URL, 'PUT', `/v1/${post}/likes/erin`);
  check('after counter.revoke rotated the channel, likes still reach the stream',
    await waitFor(() => rotated.some((e) => e.counter === 'likes' && e.count === 4), 5000), rotated);
  s3.close();
  await db.query('DROP ROLE likes_test_nobody');

  await db.end();
  finish();
})().catch((e) => { console.log(`not ok - api tests crashed: ${e.stack}`); process.exit(1); });
