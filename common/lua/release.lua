-- release.lua -- gives back entries claimed but not started (a batch's runs
-- waiting behind a long one, worker.c): each entry still owned by this
-- consumer with the same fence is acknowledged and added again at the
-- stream's end, its attempt field raised by the deliveries before this one
-- (they counted; this one does not), so that a free consumer's XREADGROUP
-- takes it at once.
-- KEYS: 1 runs stream.
-- ARGV: 1 workers group, 2 consumer name, then pairs: entry id, fence.
-- Reply: one integer per entry: 1 given back, 0 fenced (not ours any more).
local out = {}
for i = 3, #ARGV, 2 do
  local h, f = ARGV[i], tonumber(ARGV[i + 1])
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], h, h, 1)[1]
  local e = redis.call('XRANGE', KEYS[1], h, h)[1]
  if p and p[2] == ARGV[2] and p[4] == f and e then
    local fl, seen = e[2], false
    for k = 1, #fl - 1, 2 do
      if fl[k] == 'attempt' then
        fl[k + 1] = tostring((tonumber(fl[k + 1]) or 0) + f - 1)
        seen = true
      end
    end
    if not seen and f > 1 then
      fl[#fl + 1] = 'attempt'
      fl[#fl + 1] = tostring(f - 1)
    end
    redis.call('XACK', KEYS[1], ARGV[1], h)
    redis.call('XADD', KEYS[1], '*', unpack(fl))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
