-- tick.lua -- adds the tick of one slot to the runs stream, once.
-- KEYS: 1 tick key (jr:tick:<slot>), 2 runs stream, 3 last tick key.
-- ARGV: 1 tick key TTL in ms, 2 slot, 3 enqueue time ms, 4 workers group.
-- Reply: 1 if this call added the slot's tick; 0 if another caller had the
-- slot; 2 if the slot was ours but the previous tick is still undelivered
-- (it will run a cycle that catches up: ticks never pile up while no
-- consumer runs, and "queued" counts at most one of them).
-- include: lib/stream.lua
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local last = redis.call('GET', KEYS[3])
if last and redis.call('EXISTS', KEYS[2]) == 1 then
  local delivered = '0-0'
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[2])) do
    local f = info_fields(g)
    if f['name'] == ARGV[4] then delivered = f['last-delivered-id'] end
  end
  if id_less(delivered, last) then return 2 end
end
local id = redis.call('XADD', KEYS[2], '*', 'v', '1', 'type', 'tick', 'slot', ARGV[2], 'enq', ARGV[3])
redis.call('SET', KEYS[3], id)
return 1
