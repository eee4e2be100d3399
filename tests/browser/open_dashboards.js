// open_dashboards.js -- keeps JR_PAGES dashboards open on the overview for
// JR_SECONDS (tests/bench/dashboard_bench.py measures what they cost the
// producer).  Logs in once; the pages share the session cookie.  Prints
// "open" when every page shows the overview.
'use strict';

const puppeteer = require('puppeteer-core');

async function main() {
  const base = process.env.JR_URL;
  const n = Number(process.env.JR_PAGES || 10);
  const secs = Number(process.env.JR_SECONDS || 60);
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-timer-throttling',
      '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows'],
  });
  try {
    const first = await browser.newPage();
    await first.goto(base + '/dashboard', { waitUntil: 'load' });
    await first.waitForSelector('#login:not([hidden])');
    await first.type('#token', process.env.JR_TOKEN);
    await first.click('#login-form button[type=submit]');
    await first.waitForSelector('#ov-queue');
    const pages = [first];
    for (let i = 1; i < n; i++) {
      const p = await browser.newPage();
      await p.goto(base + '/dashboard#/', { waitUntil: 'load' });
      await p.waitForSelector('#ov-queue');
      pages.push(p);
    }
    console.log('open');
    await new Promise((r) => setTimeout(r, secs * 1000));
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
