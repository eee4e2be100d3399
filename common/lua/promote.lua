-- promote.lua -- moves the delayed runs that are due into the runs stream.
-- KEYS: 1 delayed ZSET (score = due ms, member = the entry's fields as a
--       JSON object), 2 runs stream.
-- ARGV: 1 now ms, 2 most members to move.
-- A member that is not a JSON object becomes an entry without an id (claim
-- turns it into a dead record).
-- Reply: how many members moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  local ok, t = pcall(cjson.decode, m)
  local a = {}
  if ok and type(t) == 'table' then
    for k, v in pairs(t) do
      if type(k) == 'string' and (type(v) == 'string' or type(v) == 'number') then
        a[#a + 1] = k; a[#a + 1] = tostring(v)
      end
    end
  end
  if #a == 0 then a = {'v', '1', 'type', 'run', 'bad', 'delayed member is not a JSON object'} end
  redis.call('XADD', KEYS[2], '*', unpack(a))
  redis.call('ZREM', KEYS[1], m)
end
return #due
