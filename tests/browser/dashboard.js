// dashboard.js -- drives Debian's chromium (headless, through puppeteer-core)
// through the dashboard of a running producer; run by
// tests/integration/test_dashboard.py, which starts the real producer,
// consumers, Redis and PostgreSQL and installs puppeteer-core (npm ci).
//
// Environment: JR_URL (http://127.0.0.1:PORT), JR_TOKEN, JR_OUT (screenshots
// and report.json go there), CHROMIUM (default /usr/bin/chromium),
// JR_SCREENSHOT_ONLY=1 (only log in and save overview.png: make
// dashboard-screenshot).
//
// Every step is a check; a check that cannot run because the producer has
// no such endpoint (the operator-control API) is reported as "missing" with
// the endpoint it needs, never as passed.  Exit 0 only when every check that
// ran passed.  The report (JR_OUT/report.json) lists them all.
'use strict';

const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const BASE = process.env.JR_URL;
const TOKEN = process.env.JR_TOKEN;
const OUT = process.env.JR_OUT || '.';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const API = BASE + '/api/integrations/jobs';
const XSS = '<img src=x onerror=alert(1)>';
const DEADLINE = 30000;     // generous: the machine may be loaded; speed is measured, not asserted

const checks = [];
const consoleErrors = [];
const foreign = [];
const dialogs = [];

function check(name, ok, detail) {
  checks.push({ name, result: ok ? 'passed' : 'failed', detail: detail === undefined ? '' : detail });
  console.log((ok ? 'PASS ' : 'FAIL ') + name + (detail !== undefined ? ' -- ' + JSON.stringify(detail) : ''));
}

function missing(name, needs) {
  checks.push({ name, result: 'missing', detail: needs });
  console.log('MISSING ' + name + ' -- needs ' + needs);
}

async function api(method, p, body) {
  const opt = { method, headers: { Authorization: 'Bearer ' + TOKEN } };
  if (body !== undefined) {
    opt.headers['Content-Type'] = 'application/json';
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(API + p, opt);
  let j = null;
  try { j = await r.json(); } catch (e) { j = null; }
  return { status: r.status, body: j };
}

// A route the producer does not have answers httpd's own 404 "not_found" (or
// 405); a route it has answers its own code for an unknown id.
async function hasRoute(method, p, body) {
  const r = await api(method, p, body);
  return !((r.status === 404 || r.status === 405) && r.body && r.body.error &&
    (r.body.error.code === 'not_found' || r.body.error.code === 'method_not_allowed'));
}

async function waitFor(fn, timeout, what) {
  const end = Date.now() + (timeout || DEADLINE);
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out waiting for ' + what + (last instanceof Error ? ': ' + last.message : ''));
}

async function runStatus(id) {
  const r = await api('GET', '/runs/' + encodeURIComponent(id));
  return r.status === 200 ? r.body : null;
}

async function pageStatus(page) {
  return page.$eval('#run-status', (e) => e.getAttribute('data-status')).catch(() => null);
}

async function clickConfirm(page) {
  await page.waitForSelector('#confirm:not([hidden])', { timeout: DEADLINE });
  await page.click('#confirm-yes');
}

async function shot(page, name) {
  await new Promise((r) => setTimeout(r, 150));
  await page.screenshot({ path: path.join(OUT, name), fullPage: true });
}

function watch(page) {
  const origin = new URL(BASE).origin;
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text() + ' @ ' + JSON.stringify(m.location())); });
  page.on('pageerror', (e) => consoleErrors.push('pageerror: ' + e.message));
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith('data:') && new URL(u).origin !== origin) foreign.push(u);
  });
  page.on('dialog', async (d) => { dialogs.push(d.type() + ': ' + d.message()); await d.dismiss(); });
}

async function login(page) {
  await page.goto(BASE + '/dashboard', { waitUntil: 'load' });
  await page.waitForSelector('#login:not([hidden])', { timeout: DEADLINE });
  await page.type('#token', TOKEN);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#ov-queue', { timeout: DEADLINE });
}

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-features=Translate,OptimizationHints,MediaRouter'],
    defaultViewport: { width: 1280, height: 900 },
  });
  try {
    if (process.env.JR_SCREENSHOT_ONLY) {
      const page = await browser.newPage();
      await page.setExtraHTTPHeaders({ 'Accept-Language': 'en-US,en;q=0.9' });
      await login(page);
      await page.waitForFunction(() => document.querySelectorAll('#ov-jobs tbody tr').length > 0, { timeout: DEADLINE });
      await shot(page, 'overview.png');
      return 0;
    }
    await scenario(browser);
  } finally {
    await browser.close();
  }
  const failed = checks.filter((c) => c.result === 'failed');
  fs.writeFileSync(path.join(OUT, 'report.json'), JSON.stringify({ checks, consoleErrors, foreign, dialogs }, null, 2));
  return failed.length ? 1 : 0;
}

async function scenario(browser) {
  // A wrong token, in a context of its own (its 401 is an expected console
  // message there, not in the main page).
  {
    const ctx = await browser.createBrowserContext();
    const p = await ctx.newPage();
    await p.goto(BASE + '/dashboard', { waitUntil: 'load' });
    await p.waitForSelector('#login:not([hidden])', { timeout: DEADLINE });
    await p.type('#token', 'not-the-token');
    await p.click('#login-form button[type=submit]');
    await p.waitForSelector('#login-error:not([hidden])', { timeout: DEADLINE });
    const msg = await p.$eval('#login-error', (e) => e.textContent);
    check('wrong token shows an error on the login form', /wrong|incorrecto/i.test(msg), msg);
    await ctx.close();
  }

  const page = await browser.newPage();
  watch(page);
  await page.setExtraHTTPHeaders({ 'Accept-Language': 'en-US,en;q=0.9' });

  // ---- log in
  await login(page);
  check('login shows the overview', true);
  const cookies = await page.cookies();
  const sess = cookies.find((c) => c.name === 'jr_session');
  check('session cookie is HttpOnly, SameSite=Strict, Path=/',
    !!sess && sess.httpOnly && sess.sameSite === 'Strict' && sess.path === '/',
    sess && { httpOnly: sess.httpOnly, sameSite: sess.sameSite, path: sess.path });
  check('the token is not in the cookie', !!sess && !sess.value.includes(TOKEN));
  const storage = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + location.href);
  check('the token is not in localStorage, sessionStorage or the URL', !storage.includes(TOKEN));
  await page.waitForFunction(() => document.querySelectorAll('#ov-jobs tbody tr').length > 0, { timeout: DEADLINE });
  const ovText = await page.$eval('#view', (e) => e.textContent);
  check('overview lists the jobs, the queue and the health checks',
    ['noop', 'meta_spend', 'PostgreSQL', 'Redis', 'queued'].every((w) => ovText.includes(w)));
  check('overview draws the chart as SVG', await page.$('svg.chart') !== null);
  await shot(page, 'overview.png');

  const hasSearch = await hasRoute('GET', '/runs?limit=1');
  const hasCancel = await hasRoute('POST', '/runs/no-such-run/cancel');
  const hasPause = await hasRoute('POST', '/noop/resume');
  const hasBulk = await hasRoute('POST', '/dead/retry', { job: 'no_such_job_for_probe' });

  // ---- a run enqueued through the API appears with its final status
  const t0 = Date.now();
  const en = await api('POST', '/noop/run', { orgId: 'org-ui', payload: { sleepMs: 50 } });
  check('enqueue through the API', en.status === 202, en);
  const rid = en.body.id;
  if (hasSearch) {
    await page.goto(BASE + '/dashboard#/runs', { waitUntil: 'load' });
    await waitFor(() => page.$eval('tr[data-run="' + rid + '"] .badge', (e) => e.classList.contains('s-succeeded')),
      DEADLINE, 'run ' + rid + ' succeeded in the runs list');
    const ms = Date.now() - t0;
    check('a run enqueued through the API appears in Runs with its final status', true, { ms });
    await shot(page, 'runs.png');
    await page.click('tr[data-run="' + rid + '"] a');
  } else {
    missing('a run enqueued through the API appears in Runs with its final status',
      'GET /api/integrations/jobs/runs (search, issue 14)');
    // in Redis mode the row is written behind the stream: open the page
    // once the API knows the run (a 404 would be a console message)
    await waitFor(() => runStatus(rid), DEADLINE, 'run ' + rid + ' known to the API');
    await page.goto(BASE + '/dashboard#/run/' + rid, { waitUntil: 'load' });
  }
  // ---- open it
  await waitFor(async () => (await pageStatus(page)) === 'succeeded', DEADLINE, 'run page shows succeeded');
  const runText = await page.$eval('#run-body', (e) => e.textContent);
  check('the run page shows payload, attempts, times and consumer',
    runText.includes('"sleepMs": 50') && runText.includes('org-ui') && /-c\d/.test(runText), runText.slice(0, 200));
  check('a run reached from the API shows succeeded', true, { msSinceEnqueue: Date.now() - t0 });
  await shot(page, 'run.png');

  // ---- the XSS payload stays text (payload and org id)
  const x = await api('POST', '/noop/run', { orgId: XSS, payload: { note: XSS, failAlways: true } });
  check('enqueue the XSS run', x.status === 202, x);
  const xid = x.body.id;
  await waitFor(async () => { const r = await runStatus(xid); return r && r.status === 'dead'; }, DEADLINE, 'XSS run dead');
  await page.goto(BASE + '/dashboard#/run/' + xid, { waitUntil: 'load' });
  await waitFor(async () => (await pageStatus(page)) === 'dead', DEADLINE, 'XSS run page');
  const xs = await page.evaluate(() => ({
    payload: document.getElementById('run-payload').textContent,
    body: document.body.textContent,
    imgs: document.querySelectorAll('img').length,
  }));
  check('XSS payload shows as text and creates no element',
    xs.payload.includes(XSS) && xs.body.includes(XSS) && xs.imgs === 0 && dialogs.length === 0, xs.imgs);

  // ---- dead runs: retry one
  await page.goto(BASE + '/dashboard#/dead', { waitUntil: 'load' });
  await page.waitForSelector('tr[data-run="' + xid + '"]', { timeout: DEADLINE });
  const deadText = await page.$eval('#dead-body', (e) => e.textContent);
  check('dead runs list the XSS run as text', deadText.includes(XSS) && (await page.$$('#dead-body img')).length === 0);
  await shot(page, 'dead.png');
  await page.click('tr[data-run="' + xid + '"] button.retry-run');
  await clickConfirm(page);
  await waitFor(async () => { const r = await runStatus(xid); return r && r.source === 'retry'; }, DEADLINE, 'retried run');
  check('retry one dead run from the page', true);

  // ---- retry all that match (bulk redrive)
  if (hasBulk) {
    const d2 = await api('POST', '/noop/run', { orgId: 'org-bulk', payload: { failAlways: true } });
    await waitFor(async () => { const r = await runStatus(d2.body.id); return r && r.status === 'dead'; }, DEADLINE, 'second dead run');
    await page.goto(BASE + '/dashboard#/dead?job=noop&orgId=org-bulk', { waitUntil: 'load' });
    await page.waitForSelector('tr[data-run="' + d2.body.id + '"]', { timeout: DEADLINE });
    await page.click('#retry-all');
    await clickConfirm(page);
    await waitFor(async () => { const r = await runStatus(d2.body.id); return r && r.source === 'retry'; }, DEADLINE, 'bulk-retried run');
    check('retry all dead runs that match the filter, after a confirmation', true);
  } else {
    missing('retry all dead runs that match the filter', 'POST /api/integrations/jobs/dead/retry (issue 14)');
  }

  // ---- cancel a long run
  if (hasCancel) {
    const l = await api('POST', '/noop/run', { orgId: 'org-long', payload: { sleepMs: 60000 } });
    const lid = l.body.id;
    await waitFor(() => runStatus(lid), DEADLINE, 'long run known to the API');
    await page.goto(BASE + '/dashboard#/run/' + lid, { waitUntil: 'load' });
    await waitFor(async () => (await pageStatus(page)) === 'running', DEADLINE, 'long run running on the page');
    await page.click('#cancel-run');
    await clickConfirm(page);
    await waitFor(async () => (await pageStatus(page)) === 'cancelled', DEADLINE, 'long run cancelled on the page');
    check('cancel a long run from its page: it ends cancelled', true);
    await shot(page, 'run-cancelled.png');
    // the search's filters, through the form
    await page.goto(BASE + '/dashboard#/runs', { waitUntil: 'load' });
    await page.waitForSelector('#filters select[name=status]', { timeout: DEADLINE });
    await page.select('#filters select[name=status]', 'cancelled');
    await page.type('#filters input[name=orgId]', 'org-long');
    await page.click('#filters button[type=submit]');
    await page.waitForSelector('tr[data-run="' + lid + '"]', { timeout: DEADLINE });
    const rows = await page.$$eval('#runs tbody tr', (trs) => trs.map((tr) => tr.querySelector('.badge').className));
    check('search runs by status and org from the form', rows.length >= 1 && rows.every((c) => c.includes('s-cancelled')) &&
      (await page.evaluate(() => location.hash)).includes('status=cancelled'), rows);
  } else {
    missing('cancel a long run from its page', 'POST /api/integrations/jobs/runs/{id}/cancel (issue 14)');
  }

  // ---- pause a job: its runs stay queued; resume: they run
  if (hasPause) {
    await page.goto(BASE + '/dashboard#/jobs', { waitUntil: 'load' });
    await page.waitForSelector('tr[data-job="noop"] button.toggle-pause', { timeout: DEADLINE });
    await page.click('tr[data-job="noop"] button.toggle-pause');
    await page.waitForFunction(() => { const r = document.querySelector('tr[data-job="noop"]'); return r && r.querySelector('.s-paused'); }, { timeout: DEADLINE });
    await shot(page, 'jobs.png');
    // consumers see a pause within 1 s (they re-read it every 500 ms)
    await new Promise((r) => setTimeout(r, 1200));
    // a run enqueued from the page while paused stays queued
    await page.click('tr[data-job="noop"] button.run-now');
    await page.waitForFunction(() => { const f = document.getElementById('flash'); return f && !f.hidden && /[0-9a-f-]{36}/.test(f.textContent); }, { timeout: DEADLINE });
    const pid = (await page.$eval('#flash', (e) => e.textContent)).match(/[0-9a-f-]{36}/)[0];
    await new Promise((r) => setTimeout(r, 3000));   // time for a consumer to take it, were it not paused
    const ps = await runStatus(pid);
    check('pause a job from the page: its runs stay queued', !ps || ps.status === 'queued' || ps.status === 'delayed', ps && ps.status);
    await page.click('tr[data-job="noop"] button.toggle-pause');
    await waitFor(async () => { const r = await runStatus(pid); return r && r.status === 'succeeded'; }, DEADLINE, 'run after resume');
    check('resume the job from the page: the queued run runs', true);
  } else {
    missing('pause a job: its runs stay queued', 'POST /api/integrations/jobs/{job}/pause and /resume (issue 14)');
    // "run now" exists without issue 14
    await page.goto(BASE + '/dashboard#/jobs', { waitUntil: 'load' });
    await page.waitForSelector('tr[data-job="noop"] button.run-now', { timeout: DEADLINE });
    await page.type('tr[data-job="noop"] input[data-org]', 'org-now');
    await page.click('tr[data-job="noop"] button.run-now');
    await page.waitForFunction(() => { const f = document.getElementById('flash'); return f && !f.hidden && /[0-9a-f-]{36}/.test(f.textContent); }, { timeout: DEADLINE });
    const nid = (await page.$eval('#flash', (e) => e.textContent)).match(/[0-9a-f-]{36}/)[0];
    const nr = await waitFor(async () => { const r = await runStatus(nid); return r && r.status === 'succeeded' && r; }, DEADLINE, 'run-now run');
    check('"run now" for one org from the Jobs page', nr.orgId === 'org-now', nr.orgId);
    await shot(page, 'jobs.png');
  }

  // ---- Spanish
  await page.goto(BASE + '/dashboard#/', { waitUntil: 'load' });
  await page.waitForSelector('#ov-queue', { timeout: DEADLINE });
  await page.select('#lang', 'es');
  await page.waitForFunction(() => document.documentElement.lang === 'es' && document.querySelector('#nav a').textContent === 'Resumen', { timeout: DEADLINE });
  await page.waitForFunction(() => document.getElementById('view').textContent.includes('Cola'), { timeout: DEADLINE });
  check('switch to Spanish', true);
  await shot(page, 'overview-es.png');
  {
    // a browser that asks for Spanish gets the login form in Spanish
    const ctx = await browser.createBrowserContext();
    const p = await ctx.newPage();
    watch(p);
    await p.setExtraHTTPHeaders({ 'Accept-Language': 'es-ES,es;q=0.9,en;q=0.5' });
    await p.goto(BASE + '/dashboard', { waitUntil: 'load' });
    await p.waitForSelector('#login:not([hidden])', { timeout: DEADLINE });
    const title = await p.$eval('#login h1', (e) => e.textContent);
    check('Accept-Language: es gives the Spanish login form', title === 'Iniciar sesión', title);
    await ctx.close();
  }
  await page.select('#lang', 'en');

  // ---- log out: the cookie no longer works
  const before = sess ? sess.value : '';
  await page.click('#logout');
  await page.waitForSelector('#login:not([hidden])', { timeout: DEADLINE });
  const after = (await page.cookies()).find((c) => c.name === 'jr_session');
  const reuse = await fetch(API + '/stats', { headers: { Cookie: 'jr_session=' + before } });
  check('log out clears the cookie and ends the session', (!after || !after.value) && reuse.status === 401,
    { cookieLeft: !!(after && after.value), reuseStatus: reuse.status });

  check('no error in the browser console', consoleErrors.length === 0, consoleErrors);
  check('no request to another origin', foreign.length === 0, foreign);
  check('no dialog opened (no script from the data ran)', dialogs.length === 0, dialogs);
}

main().then((rc) => process.exit(rc), (e) => {
  console.log('FAIL driver: ' + (e && e.stack ? e.stack : e));
  try {
    fs.writeFileSync(path.join(OUT, 'report.json'), JSON.stringify({ checks, consoleErrors, foreign, dialogs, error: String(e && e.stack) }, null, 2));
  } catch (e2) { /* nothing more to say */ }
  process.exit(2);
});
