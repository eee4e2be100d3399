-- cancel.lua -- adds the cancel request of a run and tells whether a
-- consumer holds the run now (POST /runs/{id}/cancel, queue_ctl.c).
-- KEYS: 1 cancel requests ZSET (jr:cancel), 2 runs stream, 3 events stream.
-- ARGV: 1 run id, 2 now ms (the request's score), 3 workers group, 4 how
--       many pending entries to look at, at most.
-- The request is kept if there is one.  "Held": the run's entry is pending
-- in the workers group (claimed: it may be running), unless the entry is a
-- delayed run not yet due (a consumer that read it parks it in jr:delayed).  From here on, a
-- consumer that reads the entry finds the request before it starts the run.
-- Reply: {held (0/1), last id of the runs stream, last id of the events
-- stream (for caught_up.lua), added (1, or 0: there was a request already)}.
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
local held = 0
if redis.call('EXISTS', KEYS[2]) == 1 then
  for _, p in ipairs(redis.call('XPENDING', KEYS[2], ARGV[3], '-', '+', tonumber(ARGV[4]))) do
    local e = redis.call('XRANGE', KEYS[2], p[1], p[1])[1]
    if e then
      local f = e[2]
      local mine, early = false, false
      for k = 1, #f, 2 do
        if f[k] == 'id' then
          mine = f[k + 1] == ARGV[1]
        elseif f[k] == 'runat' then
          -- a delayed run read early is parked by its consumer, not run
          early = (tonumber(f[k + 1]) or 0) > tonumber(ARGV[2])
        end
      end
      if mine and not early then held = 1 end
    end
    if held == 1 then break end
  end
end
local function last(key)
  if redis.call('EXISTS', key) == 0 then return '0-0' end
  local r = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
  return r and r[1] or '0-0'
end
return {held, last(KEYS[2]), last(KEYS[3]), added}
