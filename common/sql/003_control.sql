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

-- Search (GET /runs, producer runs list): most recent first by id (run ids
-- are time-ordered UUIDv7), keyset pagination on id.  The primary key
-- serves the unfiltered list; these serve the filters.  The status index
-- leaves out 'succeeded', the common state: a search for it walks the
-- primary key and finds matches at once, and rows pass through this index
-- only while they are queued, running, failed, dead or cancelled.
create index if not exists job_runs_job_id_idx on job_runs (job, id);
create index if not exists job_runs_org_id_idx on job_runs (org_id, id) where org_id is not null;
create index if not exists job_runs_status_id_idx on job_runs (status, id) where status <> 'succeeded';

-- Pruning of finished runs past retention includes cancelled ones.
drop index if exists job_runs_finished_idx;
create index if not exists job_runs_finished_idx on job_runs (finished_at)
    where status in ('succeeded','dead','cancelled');
