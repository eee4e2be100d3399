-- trim.lua -- trims a stream without losing work.
-- KEYS: 1 stream.
-- ARGV: 1 protected group ('' = none), 2 max length (0 = no cap),
--       3 most entries dropped per call by the cap.
-- Trims the entries older than every group's oldest pending or undelivered
-- entry; above max length, drops more but never past the protected group's
-- (on jr:runs the protected group is jr:workers: history loses entries
-- before work is lost).
-- Reply: how many entries were removed.
-- include: lib/stream.lua
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
local minall, minprot
for _, g in ipairs(groups) do
  local f = info_fields(g)
  local m = id_next(f['last-delivered-id'])
  local pend = redis.call('XPENDING', KEYS[1], f['name'])
  if pend[1] > 0 and id_less(pend[2], m) then m = pend[2] end
  if not minall or id_less(m, minall) then minall = m end
  if f['name'] == ARGV[1] then minprot = m end
end
if not minall then return 0 end
local n = redis.call('XTRIM', KEYS[1], 'MINID', minall)
local maxlen = tonumber(ARGV[2])
local len = redis.call('XLEN', KEYS[1])
if maxlen > 0 and len > maxlen then
  local over = math.min(len - maxlen, tonumber(ARGV[3]))
  local r = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over + 1)
  local target = r[#r][1]
  if minprot and id_less(minprot, target) then target = minprot end
  if id_less(minall, target) then n = n + redis.call('XTRIM', KEYS[1], 'MINID', target) end
end
return n
