-- 002_org_throttle: per-org throttle windows.  When Meta throttles an
-- account, the job records until when; the org's other runs wait (deferred,
-- not failed) until then, across all consumers, while other orgs go on.
create table if not exists org_throttle (
    org_id     text primary key,
    until      timestamptz not null,
    reason     text,
    updated_at timestamptz not null default now()
);
