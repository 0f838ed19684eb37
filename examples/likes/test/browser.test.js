'use strict';
// The browser test: real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) opens the page twice as two users; a like
// clicked in one page must show in the other within 1 s (the change feed:
// compaction every 100 ms, notifications at most every 100 ms, then the
// service's SSE fan-out).  Screenshots go to OUT_DIR.
const path = require('node:path');
const { chromium } = require('playwright-core');
const { check, finish } = require('./lib');

const URL = process.env.LIKES_URL;
const OUT = process.env.OUT_DIR;

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  const posts = `b-${Date.now()}-1,b-${Date.now()}-2`;
  const [alice, bob] = await Promise.all(['alice', 'bob'].map(async (user) => {
    const page = await (await browser.newContext({ viewport: { width: 640, height: 420 } })).newPage();
    await page.goto(`${URL}/?user=${user}&posts=${posts}`);
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('live'), null, { timeout: 10000 });
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=count]')].every((e) => e.textContent === '0'), null, { timeout: 10000 });
    return page;
  }));
  check('both pages are live and show 0 likes', true);

  const countOf = (page, i) => page.locator('.post').nth(i).locator('[data-testid=count]');
  const delays = [];
  // alice likes post 1, bob sees it; bob likes post 1 too, alice sees 2
  for (const [page, other, expect] of [[alice, bob, '1'], [bob, alice, '2']]) {
    const answered = page.waitForResponse((r) => r.request().method() === 'PUT' && r.status() === 200);
    await page.locator('.post').nth(0).locator('[data-testid=like]').click();
    await answered;
    const t0 = Date.now();
    let ok = true;
    try {
      await other.waitForFunction((v) => document.querySelectorAll('[data-testid=count]')[0].textContent === v, expect, { timeout: 1000, polling: 'raf' });
    } catch { ok = false; }
    delays.push(Date.now() - t0);
    check(`a like in one page shows in the other within 1 s (count ${expect}, ${delays[delays.length - 1]} ms)`, ok,
      await countOf(other, 0).textContent());
  }
  check('the liking page shows its own like at once', (await countOf(alice, 0).textContent()) === '2' &&
    (await alice.locator('.post').nth(0).locator('[data-testid=like]').textContent()).includes('Liked'));
  check('the other post is untouched', (await countOf(bob, 1).textContent()) === '0');
  // unlike: alice takes hers back, bob sees 1
  await alice.locator('.post').nth(0).locator('[data-testid=like]').click();
  let ok = true;
  try {
    await bob.waitForFunction(() => document.querySelectorAll('[data-testid=count]')[0].textContent === '1', null, { timeout: 2000 });
  } catch { ok = false; }
  check('an unlike shows in the other page', ok);
  // a page loaded later starts with the current counts
  const carol = await (await browser.newContext({ viewport: { width: 640, height: 420 } })).newPage();
  await carol.goto(`${URL}/?user=carol&posts=${posts}`);
  ok = true;
  try {
    await carol.waitForFunction(() => document.querySelectorAll('[data-testid=count]')[0].textContent === '1', null, { timeout: 5000 });
  } catch { ok = false; }
  check('a page opened later shows the current count', ok);

  await alice.screenshot({ path: path.join(OUT, 'browser-alice.png') });
  await bob.screenshot({ path: path.join(OUT, 'browser-bob.png') });
  console.log(`# screenshots: ${path.join(OUT, 'browser-alice.png')}, ${path.join(OUT, 'browser-bob.png')}`);
  console.log(`# like-to-other-page delays: ${delays.join(', ')} ms`);
  await browser.close();
  finish();
})().catch((e) => { console.log(`not ok - browser test crashed: ${e.stack}`); process.exit(1); });
