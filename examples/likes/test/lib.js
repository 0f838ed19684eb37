'use strict';
// Helpers of the example's tests: checks printed as "ok - ..." / "not ok -
// ..." lines (test/run.sh counts them), HTTP calls, an SSE client.
const http = require('node:http');

let failed = 0;
function check(name, cond, detail) {
  if (cond) console.log(`ok - ${name}`);
  else { failed++; console.log(`not ok - ${name}${detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)) : ''}`); }
  return cond;
}
function finish() { process.exit(failed ? 1 : 0); }

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

// One HTTP call: resolves { status, headers, text, json }.
function call(base, method, path, { body, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body));
    const req = http.request(base + path, { method, agent, headers: { ...(data ? { 'content-type': 'application/json' } : {}), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// A server-sent events subscriber: onEvent({id, event, data}) per event.
function subscribe(base, path, onEvent, headers = {}) {
  const sseAgent = new http.Agent({ keepAlive: false });
  return new Promise((resolve, reject) => {
    const req = http.get(base + path, { agent: sseAgent, headers: { accept: 'text/event-stream', ...headers } }, (res) => {
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const ev = { event: 'message', data: '' };
          for (const line of block.split('\n')) {
            const m = /^([a-z]+): ?(.*)$/.exec(line);
            if (!m) continue;
            if (m[1] === 'data') ev.data += m[2];
            else ev[m[1]] = m[2];
          }
          if (ev.data) onEvent(ev, Date.now());
        }
      });
      resolve({ status: res.statusCode, close: () => req.destroy() });
    });
    req.on('error', (e) => { if (e.code !== 'ECONNRESET') reject(e); });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Wait until fn() is truthy (polled every 20 ms), at most ms; its last value.
async function waitFor(fn, ms) {
  const end = Date.now() + ms;
  let v;
  while (!(v = await fn()) && Date.now() < end) await sleep(20);
  return v;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

module.exports = { check, finish, call, subscribe, sleep, waitFor, percentile };
