// pgboss_bench.js -- the pg-boss side of the benchmark (tests/bench/run.py).
//
// Usage (node 20, pg-boss from tests/bench/.cache/npm, see run.py):
//   node pgboss_bench.js DATABASE_URL enqueue N             insert() in chunks of 1000
//   node pgboss_bench.js DATABASE_URL process N BATCH LOOPS fetch({batchSize}) +
//                                                          complete(ids), LOOPS loops at once
//   node pgboss_bench.js DATABASE_URL work N BATCH CONC     work({batchSize, localConcurrency,
//                                                          burstWhenBatchFull}), a no-op handler
//   node pgboss_bench.js DATABASE_URL latency SAMPLES       work() at its shortest polling
//                                                          interval (0.5 s), one job at a time
// Prints one JSON object on stdout.  The consumer side runs in a child
// process of its own, so that its memory figures (rss; peak = maxRSS) are
// its own.  Queues use pg-boss's defaults (completed jobs are kept).
'use strict';

const { performance } = require('perf_hooks');
const { PROCESS_TIMEOUT_S, wallMs, sleep, rss, maxRss, startChild, latencySummary, run } =
  require('./bench_lib');
// pg-boss 12 is an ES module: node >= 20.19 loads it with require().
const { PgBoss } = require('pg-boss');

const [url, mode, arg1, arg2, arg3] = process.argv.slice(2);
const CHUNK = 1000;

async function startBoss() {
  // No maintenance or cron schedules during a measurement.
  const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false });
  boss.on('error', (e) => console.error(e));
  await boss.start();
  return boss;
}

async function insertAll(boss, queue, n) {
  for (let done = 0; done < n; done += CHUNK) {
    const k = Math.min(CHUNK, n - done);
    const jobs = [];
    for (let i = 0; i < k; i++) jobs.push({ data: {} });
    await boss.insert(queue, jobs);
  }
}

// ---- the consumer child ----------------------------------------------------

async function child() {
  const { queue, n, batch, loops, latency, work } = JSON.parse(process.env.BENCH_CHILD);
  const boss = await startBoss();
  await sleep(1000);
  const idle = rss();
  process.send({ ready: true });
  const lat = [];
  let done = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const deadline = t0 + PROCESS_TIMEOUT_S * 1000;
  if (work) {
    // work() completes a batch once its handler returns: the count is of
    // handled jobs, so the last batch's complete() is not timed (at most
    // one batch per loop in pg-boss's favour).
    let finish;
    const finished = new Promise((r) => { finish = r; });
    await boss.work(queue, { batchSize: batch, localConcurrency: loops, burstWhenBatchFull: true,
                             pollingIntervalSeconds: 0.5 }, async (jobs) => {
      done += jobs.length;
      if (done >= n) finish();
    });
    const timer = setTimeout(finish, PROCESS_TIMEOUT_S * 1000);
    await finished;
    clearTimeout(timer);
  } else if (latency) {
    let finish;
    const finished = new Promise((r) => { finish = r; });
    await boss.work(queue, { pollingIntervalSeconds: 0.5 }, async ([job]) => {
      lat.push(wallMs() - job.data.t);
      process.send({ got: done });
      if (++done >= n) finish();
    });
    const timer = setTimeout(finish, PROCESS_TIMEOUT_S * 1000);
    await finished;
    clearTimeout(timer);
  } else {
    const loop = async () => {
      while (done < n && performance.now() < deadline) {
        const jobs = await boss.fetch(queue, { batchSize: batch });
        if (jobs.length === 0) continue;
        await boss.complete(queue, jobs.map((j) => j.id));
        done += jobs.length;
      }
    };
    await Promise.all(Array.from({ length: loops }, loop));
  }
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const peak = maxRss();
  await boss.stop({ graceful: false, wait: true });
  process.send({ done, seconds, idle_rss_mib: idle, busy_rss_mib: peak, lat,
                 cpu_s: (cpu.user + cpu.system) / 1e6 });
  process.exit(0);
}

// ---- the producer side ----------------------------------------------------

async function main() {
  const queue = 'bench_' + mode + '_' + process.pid;
  const boss = await startBoss();
  await boss.createQueue(queue);
  const idleProducer = rss();
  let out;
  if (mode === 'enqueue') {
    const n = Number(arg1);
    const t0 = performance.now();
    await insertAll(boss, queue, n);
    const seconds = (performance.now() - t0) / 1000;
    out = { n, seconds, per_s: Math.round(n / seconds), producer_idle_rss_mib: idleProducer,
            producer_busy_rss_mib: maxRss() };
  } else if (mode === 'process' || mode === 'work') {
    const n = Number(arg1);
    const batch = Number(arg2);
    const loops = Number(arg3 || 1);
    await insertAll(boss, queue, n);
    const c = startChild(__filename, { queue, n, batch, loops, latency: false, work: mode === 'work' },
                         (m) => !('got' in m));
    await c.ready;
    const r = await c.result;
    out = { n, batch, loops, completed: r.done, seconds: r.seconds,
            per_s: Math.round(r.done / r.seconds), worker_idle_rss_mib: r.idle_rss_mib,
            worker_busy_rss_mib: r.busy_rss_mib, cpu_us: { client: 1e6 * r.cpu_s / r.done } };
  } else if (mode === 'latency') {
    const n = Number(arg1);
    const c = startChild(__filename, { queue, n, batch: 1, loops: 1, latency: true }, (m) => !('got' in m));
    await c.ready;
    await sleep(600);
    // One job at a time: the next is sent once the worker has started the
    // previous one (work() fetches one batch per polling interval, so jobs
    // sent faster would wait behind each other, not for an idle consumer).
    for (let i = 0; i < n; i++) {
      const got = new Promise((r) => c.child.once('message', r));
      await boss.send(queue, { t: wallMs() });
      await got;
      await sleep(Math.random() * 100);
    }
    const r = await c.result;
    out = latencySummary(r.lat);
  } else {
    throw new Error('unknown mode ' + mode);
  }
  await boss.stop({ graceful: false, wait: true });
  console.log(JSON.stringify(Object.assign({ system: 'pg-boss', mode }, out)));
  process.exit(0);
}

run(child, main);
