-- 009_org_rate: the per-org rate limiter in PostgreSQL (ORG_RATE_LIMIT in
-- Redis-less mode, and while Redis is down).  The same sliding window log
-- as common/lua/rate.lua: one row per org and scope, its recent start
-- times (ms, the database's clock) and the next-wake-up hint of its
-- waiting runs.  The row lock serialises the consumers.
create table if not exists org_rate (
    key        text primary key,
    starts     bigint[] not null default '{}',
    hint       bigint not null default 0,
    updated_at timestamptz not null default now()
);

-- 0: the start is counted (the run may start); else how many ms to wait.
create or replace function jobrunner_org_rate_take(p_key text, p_n int, p_period bigint)
returns bigint language plpgsql as $$
declare
    now_ms bigint := (extract(epoch from clock_timestamp()) * 1000)::bigint;
    s bigint[];
    h bigint;
    c int;
    base bigint;
begin
    if random() < 0.001 then   -- rows of orgs idle for a day (periods are at most 24 h)
        delete from org_rate where updated_at < now() - interval '1 day' and key <> p_key;
    end if;
    insert into org_rate (key) values (p_key) on conflict (key) do nothing;
    select array(select x from unnest(r.starts) x where x > now_ms - p_period order by x), r.hint
      into s, h from org_rate r where r.key = p_key for update;
    c := coalesce(array_length(s, 1), 0);
    if c < p_n then
        update org_rate set starts = s || now_ms, updated_at = now() where key = p_key;
        return 0;
    end if;
    base := greatest(s[c - p_n + 1] + p_period, h);
    update org_rate set starts = s, hint = base + greatest(1, p_period / p_n), updated_at = now()
     where key = p_key;
    return greatest(1, base - now_ms);
end $$;

-- Fairness across orgs in Redis-less mode (docs/architecture.md, "Fairness
-- across orgs"): a run enqueued due now gets its rank in its org's line
-- (fair_seq); claims take the lowest ranks first, so the orgs with work
-- waiting take turns.  NULL for runs that wait for a time (delayed,
-- retries, deferrals) and for rows written before this migration: those
-- are claimed by run_at, as before, alternating with the ranked ones.
alter table job_runs add column if not exists fair_seq bigint;
create index if not exists job_runs_fair_idx on job_runs (fair_seq)
    where transport = 'pg' and status in ('queued','failed') and fair_seq is not null;
create index if not exists job_runs_fair_org_idx on job_runs ((coalesce(org_id, '')), fair_seq)
    where transport = 'pg' and status in ('queued','failed') and fair_seq is not null;
create index if not exists job_runs_timed_idx on job_runs (run_at)
    where transport = 'pg' and status in ('queued','failed') and fair_seq is null;
