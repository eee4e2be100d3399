// bench_lib.js -- what bullmq_bench.js and pgboss_bench.js share: clocks,
// memory figures, the child process that runs the consumer side, the
// latency summary and the entry point.
'use strict';

const { fork } = require('child_process');
const { performance } = require('perf_hooks');

const PROCESS_TIMEOUT_S = Number(process.env.BENCH_TIMEOUT_S || 20);

const wallMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mib = (bytes) => Math.round((bytes / 1048576) * 10) / 10;
const rss = () => mib(process.memoryUsage().rss);
const maxRss = () => mib(process.resourceUsage().maxRSS * 1024);

// Forks script (the caller's own file) as the consumer child with cfg in
// BENCH_CHILD.  The child sends {ready} once set up, then its result: the
// first other message for which isResult(m) holds.
function startChild(script, cfg, isResult = () => true) {
  const c = fork(script, process.argv.slice(2), {
    env: Object.assign({}, process.env, { BENCH_CHILD: JSON.stringify(cfg) }),
  });
  const ready = new Promise((r) => c.on('message', (m) => { if (m.ready) r(); }));
  const result = new Promise((r, j) => {
    c.on('message', (m) => { if (!m.ready && isResult(m)) r(m); });
    c.on('exit', (code) => j(new Error('consumer child exited with ' + code)));
  });
  return { ready, result, child: c };
}

// p50 and p99 of latencies in ms.
function latencySummary(lat) {
  lat = lat.slice().sort((a, b) => a - b);
  return { samples: lat.length, p50_ms: +lat[Math.floor(lat.length / 2)].toFixed(3),
           p99_ms: +lat[Math.floor((lat.length * 99) / 100)].toFixed(3) };
}

// The child when BENCH_CHILD is set, else main; exit 2 on an error.
function run(child, main) {
  (process.env.BENCH_CHILD ? child() : main()).catch((e) => {
    console.error(e);
    process.exit(2);
  });
}

module.exports = { PROCESS_TIMEOUT_S, wallMs, sleep, rss, maxRss, startChild, latencySummary, run };
