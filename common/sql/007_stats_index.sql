-- 007_stats_index: finished runs by time, job and outcome, for the
-- dashboard's stats (GET /api/integrations/jobs/stats).  The series of the
-- last hour is then one index-only range scan whose cost follows the runs
-- finished in the window, not the size of job_runs.
create index if not exists job_runs_stats_idx on job_runs (finished_at, job, status)
    where finished_at is not null;
