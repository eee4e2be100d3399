-- consumer_gc.lua -- deletes the group's consumers that have nothing
-- pending and were idle that long.
-- KEYS: 1 stream.
-- ARGV: 1 group, 2 min idle ms.
-- Reply: how many consumers were deleted.
-- include: lib/stream.lua
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = info_fields(c)
  if f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    n = n + 1
  end
end
return n
