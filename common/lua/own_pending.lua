-- own_pending.lua -- takes back the entries of this consumer name left by
-- its previous incarnation: those last delivered before this process
-- started (idle longer than the process has lived).  XCLAIM re-checks the
-- idle time atomically and counts a delivery.
-- KEYS: 1 runs stream.
-- ARGV: 1 workers group, 2 consumer name, 3 min idle ms, 4 most entries.
-- Reply: {entries found, {{entry id, {field, value...}, delivery count}...}}.
local pl = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4], ARGV[2])
local ids, res = {}, {}
for _, p in ipairs(pl) do ids[#ids + 1] = p[1] end
if #ids == 0 then return {0, res} end
local es = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], unpack(ids))
for _, e in ipairs(es) do
  if e and e[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)[1]
    res[#res + 1] = {e[1], e[2], p and p[4] or 0}
  end
end
return {#ids, res}
