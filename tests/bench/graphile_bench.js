// graphile_bench.js -- the graphile-worker side of the benchmark (tests/bench/run.py).
//
// Usage (node 20, graphile-worker from tests/bench/.cache/npm, see run.py):
//   node graphile_bench.js DATABASE_URL enqueue N            addJobs() in chunks of 1000
//   node graphile_bench.js DATABASE_URL process N CONC BATCH run() with concurrency CONC and
//                                                           a no-op task; BATCH > 0: its
//                                                           localQueue of BATCH jobs and
//                                                           batched completion
//                                                           (completeJobBatchDelay 0)
//   node graphile_bench.js DATABASE_URL latency SAMPLES      enqueue-to-start, idle worker
// Prints one JSON object on stdout.  The worker runs in a child process of its
// own (memory: rss; peak = maxRSS), idle until the jobs of `process` appear:
// they are added in one transaction (graphile_worker.add_jobs) and the
// worker is timed from the moment before its COMMIT (wall clock, the same
// machine) to its last job:success event.
// Completed jobs are deleted, as graphile-worker always does.
'use strict';

const { PROCESS_TIMEOUT_S, wallMs, sleep, rss, maxRss, startChild, latencySummary, run } =
  require('./bench_lib');
const { run: runWorker, makeWorkerUtils } = require('graphile-worker');

const [url, mode, arg1, arg2, arg3] = process.argv.slice(2);
const CHUNK = 1000;
const silent = { logger: undefined };

// graphile-worker logs every job at info level: keep stdout for the result.
const { Logger } = require('graphile-worker');
const logger = new Logger(() => (level, message) => {
  if (level === 'error') console.error(message);
});
silent.logger = logger;

async function addAll(utils, taskIdentifier, n) {
  for (let done = 0; done < n; done += CHUNK) {
    const k = Math.min(CHUNK, n - done);
    const jobs = [];
    for (let i = 0; i < k; i++) jobs.push({ identifier: taskIdentifier, payload: {} });
    await utils.addJobs(jobs);
  }
}

// ---- the worker child ------------------------------------------------------

async function child() {
  const { task, n, conc, batch, latency } = JSON.parse(process.env.BENCH_CHILD);
  let done = 0;
  const lat = [];
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const worker = { [task]: async (payload) => { if (latency) lat.push(wallMs() - payload.t); } };
  const preset = { worker: { connectionString: url, concurrentJobs: conc, pollInterval: 2000,
                             maxPoolSize: Math.max(10, conc + 2) } };
  if (batch > 0) {
    preset.worker.localQueue = { size: batch };
    preset.worker.completeJobBatchDelay = 0;
  }
  const runner = await runWorker({ preset, taskList: worker, noHandleSignals: true, ...silent });
  runner.events.on('job:success', () => { if (++done >= n) finish(); });
  await sleep(1000);
  const idle = rss();
  const cpu0 = process.cpuUsage();
  const go = new Promise((r) => process.on('message', (m) => { if (m.go) r(m.t); }));
  process.send({ ready: true });
  const t0 = latency ? wallMs() : await go;
  const timer = setTimeout(finish, PROCESS_TIMEOUT_S * 1000);
  await finished;
  const seconds = (wallMs() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearTimeout(timer);
  const peak = maxRss();
  await runner.stop();
  process.send({ done, seconds, idle_rss_mib: idle, busy_rss_mib: peak, lat,
                 cpu_s: (cpu.user + cpu.system) / 1e6 });
  process.exit(0);
}

// ---- the producer side ------------------------------------------------------

async function main() {
  const task = 'bench_' + mode + '_' + process.pid;
  const utils = await makeWorkerUtils({ connectionString: url, ...silent });
  await utils.migrate();
  const idleProducer = rss();
  let out;
  if (mode === 'enqueue') {
    const n = Number(arg1);
    const t0 = performance.now();
    await addAll(utils, task, n);
    const seconds = (performance.now() - t0) / 1000;
    out = { n, seconds, per_s: Math.round(n / seconds), producer_idle_rss_mib: idleProducer,
            producer_busy_rss_mib: maxRss() };
    await utils.withPgClient((c) => c.query(
      'DELETE FROM graphile_worker._private_jobs j USING graphile_worker._private_tasks t ' +
      'WHERE j.task_id = t.id AND t.identifier = $1', [task]));
  } else if (mode === 'process') {
    const n = Number(arg1);
    const conc = Number(arg2);
    const batch = Number(arg3 || 0);
    const c = startChild(__filename, { task, n, conc, batch, latency: false });
    await c.ready;
    await utils.withPgClient(async (pg) => {
      await pg.query('BEGIN');
      await pg.query("SELECT graphile_worker.add_jobs(array(SELECT json_populate_record(" +
                     "null::graphile_worker.job_spec, json_build_object('identifier', $1::text, " +
                     "'payload', '{}'::json)) FROM generate_series(1, $2::int)))", [task, n]);
      const t = wallMs();
      await pg.query('COMMIT');
      c.child.send({ go: true, t });
    });
    const r = await c.result;
    out = { n, concurrency: conc, batch, completed: r.done, seconds: r.seconds,
            per_s: Math.round(r.done / r.seconds), worker_idle_rss_mib: r.idle_rss_mib,
            worker_busy_rss_mib: r.busy_rss_mib, cpu_us: { client: 1e6 * r.cpu_s / r.done } };
  } else if (mode === 'latency') {
    const n = Number(arg1);
    const c = startChild(__filename, { task, n, conc: 1, batch: 0, latency: true });
    await c.ready;
    await sleep(200);
    for (let i = 0; i < n; i++) {
      await utils.addJob(task, { t: wallMs() });
      await sleep(20 + Math.random() * 10);
    }
    const r = await c.result;
    out = latencySummary(r.lat);
  } else {
    throw new Error('unknown mode ' + mode);
  }
  await utils.release();
  console.log(JSON.stringify(Object.assign({ system: 'graphile-worker', mode }, out)));
  process.exit(0);
}

run(child, main);
