-- 003_control: operator control -- cancel, pause, run search.

-- 'cancelled' is a final status.  A run that is running when it is
-- cancelled keeps 'running' with cancel_requested_at set until its consumer
-- stops it; the consumer then records 'cancelled' (queue_pg.c complete,
-- queue_redis.c S_COMPLETE).  'delayed' is not stored: it is a queued run
-- whose run_at is in the future.
alter table job_runs drop constraint if exists job_runs_status_check;
alter table job_runs add constraint job_runs_status_check
    check (status in ('queued','running','succeeded','failed','dead','cancelled'));
alter table job_runs add column if not exists cancel_requested_at timestamptz;

-- Paused jobs: their runs are not started, their periodic cycle is
-- skipped; enqueueing still works.  Consumers re-read it every 500 ms.
create table if not exists job_pause (
    job        text primary key,
    paused_at  timestamptz not null default now()
);

-- Search (GET /runs, producer runs list): most recent first, by
-- (enqueued_at, id), keyset pagination on the pair.  One index per filter,
-- each ending in (enqueued_at, id), so that a filter and a time window are
-- one range scan in the answer's order.  The status index leaves out
-- 'succeeded', the state most rows end in: a search for it walks the time
-- index and finds matches at once.  What they cost an enqueue:
-- tests/bench/search_bench.py (figures in docs/performance.md).
create index if not exists job_runs_recent_idx on job_runs (enqueued_at, id);
create index if not exists job_runs_job_recent_idx on job_runs (job, enqueued_at, id);
create index if not exists job_runs_org_recent_idx on job_runs (org_id, enqueued_at, id)
    where org_id is not null;
create index if not exists job_runs_status_recent_idx on job_runs (status, enqueued_at, id)
    where status <> 'succeeded';

-- Pruning of finished runs past retention includes cancelled ones.
drop index if exists job_runs_finished_idx;
create index if not exists job_runs_finished_idx on job_runs (finished_at)
    where status in ('succeeded','dead','cancelled');
