-- enqueue_idem.lua -- enqueues a run under an idempotency key, once.
-- KEYS: 1 idempotency key (jr:idem:<job>:<key>), 2 runs stream, 3 delayed ZSET.
-- ARGV: 1 run id, 2 key TTL in seconds, 3 due ms (0 = now), 4 delayed member
--       (JSON object, used when due ~= 0), 5... the entry's fields.
-- Reply: {1, run id} when added, {0, first run id} when the key was used.
local prev = redis.call('GET', KEYS[1])
if prev then return {0, prev} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if ARGV[3] ~= '0' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
else redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5)) end
return {1, ARGV[1]}
