-- extend.lua -- extends the lease of running entries: resets the idle time
-- (XCLAIM ... JUSTID, which does not count a delivery) of the entries still
-- owned by this consumer with the same fence.
-- KEYS: 1 runs stream.
-- ARGV: 1 workers group, 2 consumer name, then pairs: entry id, fence.
-- Reply: how many entries were extended.
local ids = {}
for i = 3, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == ARGV[2] and p[4] == tonumber(ARGV[i + 1]) then ids[#ids + 1] = ARGV[i] end
end
if #ids > 0 then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(ids), 'JUSTID') end
return #ids
