-- caught_up.lua -- has the history writer written everything up to these
-- entries?  (A cancel waits for it, so that job_runs tells whether the run
-- had finished before the request; queue_ctl.c.)
-- KEYS: 1 runs stream, 2 events stream.
-- ARGV: 1 history group, 2 runs stream id, 3 events stream id ('0-0': none).
-- Reply: 1 when the group has been delivered, and has acknowledged, every
-- entry of both streams up to the given ids; else 0.
-- include: lib/stream.lua
local function caught(key, upto)
  if upto == '0-0' or redis.call('EXISTS', key) == 0 then return true end
  local last
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
    local t = info_fields(g)
    if t['name'] == ARGV[1] then last = t['last-delivered-id'] end
  end
  if not last or id_less(last, upto) then return false end
  return #redis.call('XPENDING', key, ARGV[1], '-', upto, 1) == 0
end
if caught(KEYS[1], ARGV[2]) and caught(KEYS[2], ARGV[3]) then return 1 end
return 0
