-- 001_init: the compatibility tables of the legacy monolith, the run
-- record/queue, and the domain tables the jobs read and write.

-- Legacy contract (names and quoted camelCase columns are public):
-- one row per job name, plus 'job_runner' for the whole cycle.
create table if not exists job_runner_state (
    id                  text primary key,
    "lastRunAt"         timestamptz,
    "lastRunDurationMs" integer,
    "lastStatus"        text,
    "lastError"         text,
    "runCount"          bigint not null default 0,
    "failureCount"      bigint not null default 0,
    "updatedAt"         timestamptz not null default now()
);

-- The current holder of the cycle lock while a cycle runs.  The advisory
-- lock is the truth; this row is for people.  The seed's runbook
-- (SELECT pg_advisory_unlock_all(); DELETE FROM job_runner_lock;) stays safe.
create table if not exists job_runner_lock (
    id            text primary key default 'job_runner',
    holder        text not null,
    backend_pid   integer not null,
    acquired_at   timestamptz not null default now(),
    heartbeat_at  timestamptz not null default now(),
    fence         bigint not null default 0
);

-- Every run's durable record; in Redis-less mode, the queue itself.
create table if not exists job_runs (
    id               text primary key,
    job              text not null,
    org_id           text,
    payload          jsonb not null default '{}'::jsonb,
    source           text not null default 'adhoc'
                     check (source in ('adhoc','cycle','fanout','retry')),
    status           text not null default 'queued'
                     check (status in ('queued','running','succeeded','failed','dead')),
    attempts         integer not null default 0,
    max_attempts     integer not null default 5,
    run_at           timestamptz not null default now(),
    enqueued_at      timestamptz not null default now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    duration_ms      integer,
    error            text,
    consumer         text,
    -- which transport carries the run: 'pg' rows are claimed from this
    -- table; 'redis' rows are records of runs carried by the stream.
    transport        text not null default 'pg' check (transport in ('pg','redis')),
    lease_until      timestamptz,
    idempotency_key  text,
    updated_at       timestamptz not null default now()
);

-- Claims: due runs of the PostgreSQL transport, oldest first.  Partial, so
-- it stays small however much history accumulates.
create index if not exists job_runs_claim_idx on job_runs (run_at)
    where transport = 'pg' and status in ('queued','failed');
-- Reclaims: running runs by lease expiry.
create index if not exists job_runs_lease_idx on job_runs (lease_until)
    where status = 'running';
create index if not exists job_runs_dead_idx on job_runs (finished_at desc)
    where status = 'dead';
-- Pruning of finished runs past retention.
create index if not exists job_runs_finished_idx on job_runs (finished_at)
    where status in ('succeeded','dead');
create unique index if not exists job_runs_idem_idx on job_runs (job, idempotency_key)
    where idempotency_key is not null;

-- Domain tables (the jobs' data: docs/jobs.md).
create table if not exists conversations (
    id                   bigserial primary key,
    org_id               text not null,
    contact              text,
    last_inbound_at      timestamptz,
    last_outbound_at     timestamptz,
    no_reply_notified_at timestamptz
);
create index if not exists conversations_awaiting_idx on conversations (last_inbound_at)
    where last_inbound_at is not null;

create table if not exists reminders (
    id              bigserial primary key,
    org_id          text not null,
    conversation_id bigint not null references conversations(id),
    kind            text not null,
    source_at       timestamptz not null,
    created_at      timestamptz not null default now(),
    unique (conversation_id, kind, source_at)
);

create table if not exists meta_connections (
    org_id           text primary key,
    ad_account_id    text,
    access_token     text not null,
    token_expires_at timestamptz,
    status           text not null default 'active'
                     check (status in ('active','needs_reauth','disabled')),
    last_error       text,
    updated_at       timestamptz not null default now()
);

create table if not exists meta_spend_daily (
    org_id        text not null,
    ad_account_id text not null,
    date          date not null,
    spend         numeric(14,2) not null,
    currency      text not null,
    fetched_at    timestamptz not null default now(),
    primary key (org_id, ad_account_id, date)
);
