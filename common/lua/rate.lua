-- rate.lua -- the per-org rate limiter (ORG_RATE_LIMIT): a sliding window
-- log, shared by all consumers.  A run may start when fewer than N runs of
-- its org (and scope) started in the last PERIOD ms (Redis's clock).
-- KEYS: 1 the starts ZSET (score = start ms, member = run id ':' ms),
--       2 the next-wake-up hint of the org's waiting runs (a string, ms).
-- ARGV: 1 N, 2 PERIOD ms, 3 run id.
-- Reply: 0 when the start was counted (the run may start), else how many
-- ms the run should wait.  Waiting runs are spread PERIOD/N apart (the
-- hint), so that they do not all come back at the moment one slot frees:
-- each waiting run comes back about when a slot frees for it, and the
-- limiter costs about two claims per run, however long the backlog.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local c = redis.call('ZCARD', KEYS[1])
if c < n then
  redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. now)
  redis.call('PEXPIRE', KEYS[1], period)
  return 0
end
local e = redis.call('ZRANGE', KEYS[1], c - n, c - n, 'WITHSCORES')
local free = tonumber(e[2]) + period
local h = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local base = math.max(free, h)
local step = math.max(1, math.floor(period / n))
redis.call('SET', KEYS[2], tostring(base + step), 'PX', base + step - now + period)
return math.max(1, base - now)
