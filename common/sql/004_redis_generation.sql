-- 004_redis_generation: detect a Redis that lost its data.  The history
-- writers keep a random generation marker in Redis (jr:gen, created when
-- absent) and the last one they saw here; every row they write carries the
-- generation it was read from.  A marker that changed means everything
-- that was only in Redis is gone: the rows that the record still shows
-- unfinished on an older generation are moved to the PostgreSQL queue,
-- each once (the move changes their transport).
create table if not exists redis_generation (
    id         text primary key default 'jr',
    gen        text not null,
    updated_at timestamptz not null default now()
);
alter table job_runs add column if not exists redis_gen text;
