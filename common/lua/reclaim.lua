-- reclaim.lua -- takes over entries whose lease expired (XAUTOCLAIM).
-- KEYS: 1 runs stream.
-- ARGV: 1 workers group, 2 consumer name, 3 min idle ms (the lease),
--       4 cursor (entry id to start from), 5 most entries to take,
--       6 most XAUTOCLAIM calls.
-- Reply: {next cursor, {{entry id, {field, value...}, delivery count}...}}.
local g, me, idle, cur = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local want, res = tonumber(ARGV[5]), {}
for it = 1, tonumber(ARGV[6]) do
  local r = redis.call('XAUTOCLAIM', KEYS[1], g, me, idle, cur, 'COUNT', want - #res)
  cur = r[1]
  for _, e in ipairs(r[2]) do
    local p = redis.call('XPENDING', KEYS[1], g, e[1], e[1], 1)[1]
    res[#res + 1] = {e[1], e[2], p and p[4] or 0}
  end
  if cur == '0-0' or #res >= want then break end
end
return {cur, res}
