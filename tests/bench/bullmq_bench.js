// bullmq_bench.js -- the BullMQ side of the benchmark (tests/bench/run.py).
//
// Usage (node 20, bullmq from tests/bench/.cache/npm, see run.py):
//   node bullmq_bench.js REDIS_PORT enqueue N           addBulk in chunks of 1000
//   node bullmq_bench.js REDIS_PORT process N CONC [keep|remove] [SLEEP_MS]
//                                                       one Worker, no-op processor (or one
//                                                       that waits SLEEP_MS); remove: jobs
//                                                       added with removeOnComplete: true
//   node bullmq_bench.js REDIS_PORT latency SAMPLES     enqueue-to-start, idle Worker
//   node bullmq_bench.js REDIS_PORT fair N_A CONC WORKERS B GAP_MS SLEEP_MS [keep|remove]
//                                                       fairness (run.py bench_fairness): N_A
//                                                       jobs of org A added, WORKERS Worker
//                                                       processes at CONC, then B jobs of org B
//                                                       added one every GAP_MS (B 0: A alone);
//                                                       each job waits SLEEP_MS
// Prints one JSON object on stdout.  Memory figures are the resident set
// (process.memoryUsage().rss, and the peak, resourceUsage().maxRSS) of the
// process that runs the Queue (producer) or the Worker (consumer): the
// Worker always runs in a child process of its own, so that its figures are
// its own.  Jobs use BullMQ's default options (completed jobs are kept)
// unless `remove` is given.  BullMQ 6 takes ioredis as a peer dependency
// (installed beside it); INFO is read on a connection of our own.
'use strict';

const { performance } = require('perf_hooks');
const { PROCESS_TIMEOUT_S, wallMs, sleep, rss, maxRss, startChild, latencySummary, run } =
  require('./bench_lib');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const [port, mode, arg1, arg2, arg3, arg4] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
const CHUNK = 1000;

async function addAll(queue, n, remove = false) {
  const opts = remove ? { removeOnComplete: true } : undefined;
  for (let done = 0; done < n; done += CHUNK) {
    const k = Math.min(CHUNK, n - done);
    const jobs = [];
    for (let i = 0; i < k; i++) jobs.push({ name: 'noop', data: {}, opts });
    await queue.addBulk(jobs);
  }
}

// ---- the Worker child ----------------------------------------------------

// fair mode: runs until the parent says stop, then sends what it ran: per
// job [org B ? 1 : 0, timestamp (added), processedOn, finished (wall ms)].
async function fairChild(cfg) {
  const recs = [];
  const worker = new Worker(cfg.queueName, async (job) => {
    if (cfg.sleepMs) await sleep(cfg.sleepMs);
    recs.push([job.data.org === 'b' ? 1 : 0, job.timestamp, job.processedOn, wallMs()]);
  }, { connection, concurrency: cfg.conc, autorun: false });
  await worker.waitUntilReady();
  process.on('message', async (m) => {
    if (!m.stop) return;
    await worker.close();
    process.send({ recs }, () => process.exit(0));   // a large message: sent before the exit
  });
  process.send({ ready: true });
  worker.run();
}

async function child() {
  const cfg = JSON.parse(process.env.BENCH_CHILD);
  if (cfg.fair) return fairChild(cfg);
  const { queueName, conc, n, latency, sleepMs } = cfg;
  let done = 0;
  const lat = [];
  let finish;
  const finished = new Promise((r) => { finish = r; });
  const worker = new Worker(queueName, async (job) => {
    if (latency) lat.push(wallMs() - job.data.t);
    if (sleepMs) await sleep(sleepMs);
  }, { connection, concurrency: conc, autorun: false });
  worker.on('completed', () => { if (++done >= n) finish(); });
  await worker.waitUntilReady();
  await sleep(1000);
  const idle = rss();
  process.send({ ready: true });
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  worker.run();
  const timer = setTimeout(finish, PROCESS_TIMEOUT_S * 1000);
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  clearTimeout(timer);
  const peak = maxRss();
  await worker.close(true);
  process.send({ done, seconds, idle_rss_mib: idle, busy_rss_mib: peak, lat,
                 cpu_s: (cpu.user + cpu.system) / 1e6 });
  process.exit(0);
}

// ---- the producer side ----------------------------------------------------

// redis-server's CPU seconds so far (INFO cpu: used_cpu_user + used_cpu_sys)
// and the connections it has accepted (INFO stats).
async function redisInfo(r) {
  const info = await r.info();
  const v = (k) => Number((info.match(new RegExp(k + ':([0-9.]+)')) || [0, 0])[1]);
  return { cpu: v('used_cpu_user') + v('used_cpu_sys'), conns: v('total_connections_received') };
}

// Fairness: nA jobs of org A queued, `workers` Worker processes at conc,
// then nB jobs of org B added one every gapMs.  B's start latency is
// processedOn - timestamp; A's rate is taken between the moments 10 % and
// 90 % of A's jobs had finished.
async function fair(queue, nA, conc, workers, nB, gapMs, sleepMs, remove) {
  const opts = remove ? { removeOnComplete: true } : undefined;
  for (let done = 0; done < nA; done += CHUNK) {
    const jobs = [];
    for (let i = 0; i < Math.min(CHUNK, nA - done); i++) jobs.push({ name: 'noop', data: { org: 'a' }, opts });
    await queue.addBulk(jobs);
  }
  const ws = [];
  for (let i = 0; i < workers; i++)
    ws.push(startChild(__filename, { fair: true, queueName: queue.name, conc, sleepMs },
                       (m) => !!m.recs));
  await Promise.all(ws.map((w) => w.ready));
  const bAdded = [];
  const t0 = wallMs();
  for (let i = 0; i < nB; i++) {
    const wait = t0 + i * gapMs - wallMs();
    if (wait > 0) await sleep(wait);
    const job = await queue.add('noop', { org: 'b' }, opts);
    bAdded.push(job.timestamp);
  }
  const deadline = wallMs() + PROCESS_TIMEOUT_S * 3000;
  for (;;) {
    const c = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized');
    if (c.wait + c.active + c.delayed + c.prioritized === 0) break;
    if (wallMs() > deadline) throw new Error('fair: jobs left ' + JSON.stringify(c));
    await sleep(20);
  }
  ws.forEach((w) => w.child.send({ stop: true }));
  const recs = [].concat(...(await Promise.all(ws.map((w) => w.result))).map((r) => r.recs));
  const a = recs.filter((r) => r[0] === 0);
  const b = recs.filter((r) => r[0] === 1);
  if (a.length !== nA || b.length !== nB)
    throw new Error('fair: ran ' + a.length + ' of A, ' + b.length + ' of B');
  const fin = a.map((r) => r[3]).sort((x, y) => x - y);
  const t10 = fin[Math.floor(nA * 0.1)], t90 = fin[Math.floor(nA * 0.9)];
  const lastB = Math.max(...bAdded);
  const aStarts = a.map((r) => r[2]).sort((x, y) => x - y);
  return {
    n_a: nA, n_b: nB, concurrency: conc, workers, sleep_ms: sleepMs, remove_on_complete: remove,
    a_per_s: Math.round((0.8 * nA) / ((t90 - t10) / 1000)),
    // B: start minus add, and how many of A's jobs started while each waited
    b: b.map((r) => ({ wait_ms: r[2] - r[1],
                       a_passed: a.filter((x) => x[2] > r[1] && x[2] < r[2]).length })),
    a_left_at_last_b: nB ? a.filter((x) => x[2] > lastB).length : null,
    // A's 1,000th start, from when both Workers were ready
    a_1000th_start_s: (aStarts[Math.min(999, nA - 1)] - t0) / 1000,
  };
}

async function main() {
  const queueName = 'bench-' + mode + '-' + process.pid;
  const queue = new Queue(queueName, { connection });
  await queue.waitUntilReady();
  const idleProducer = rss();
  let out;
  if (mode === 'enqueue') {
    const n = Number(arg1);
    const t0 = performance.now();
    await addAll(queue, n);
    const seconds = (performance.now() - t0) / 1000;
    out = { n, seconds, per_s: Math.round(n / seconds), producer_idle_rss_mib: idleProducer,
            producer_busy_rss_mib: maxRss() };
  } else if (mode === 'process') {
    const n = Number(arg1);
    const conc = Number(arg2);
    const remove = arg3 === 'remove';
    const sleepMs = Number(arg4 || 0);
    const info = new IORedis(connection);
    await addAll(queue, n, remove);
    const c0 = await redisInfo(info);
    const w = startChild(__filename, { queueName, conc, n, latency: false, sleepMs });
    await w.ready;
    const redis0 = await redisInfo(info);
    const r = await w.result;
    const redis1 = await redisInfo(info);
    info.disconnect();
    out = { n, concurrency: conc, remove_on_complete: remove, sleep_ms: sleepMs, completed: r.done,
            seconds: r.seconds, per_s: Math.round(r.done / r.seconds),
            worker_idle_rss_mib: r.idle_rss_mib, worker_busy_rss_mib: r.busy_rss_mib,
            redis_connections: redis1.conns - c0.conns,
            cpu_us: { client: 1e6 * r.cpu_s / r.done, redis: 1e6 * (redis1.cpu - redis0.cpu) / r.done } };
  } else if (mode === 'latency') {
    const n = Number(arg1);
    const w = startChild(__filename, { queueName, conc: 1, n, latency: true });
    await w.ready;
    await sleep(200);
    for (let i = 0; i < n; i++) {
      await queue.add('noop', { t: wallMs() });
      await sleep(20);
    }
    const r = await w.result;
    out = latencySummary(r.lat);
  } else if (mode === 'fair') {
    out = await fair(queue, Number(arg1), Number(arg2), Number(arg3), Number(arg4),
                     Number(process.argv[8]), Number(process.argv[9]), process.argv[10] !== 'keep');
  } else {
    throw new Error('unknown mode ' + mode);
  }
  await queue.obliterate({ force: true });
  await queue.close();
  console.log(JSON.stringify(Object.assign({ system: 'bullmq', mode }, out)));
  process.exit(0);
}

run(child, main);
