-- fair.lua -- fair scheduling across orgs in Redis mode (docs/architecture.md,
-- "Fairness across orgs"; keys in docs/protocol.md).
--
-- Runs enter jr:runs in arrival order.  While one group (an org, or the runs
-- without an org) is alone in the stream, nothing moves: the script only
-- looks at the newest arrivals since its last look (a cursor; at most SAMPLE
-- of them) to see whether another group, or a tick, has arrived behind a
-- backlog of more than THRESHOLD waiting entries of the group at the head.
-- Then the lanes start: the waiting runs are read from the stream by the
-- pseudo-consumer FAIRER and acknowledged, and pushed to the list of their
-- group (the lane; the entry's fields packed with cmsgpack), all in this
-- script, so a run is always in exactly one of the stream and a lane, and no
-- delivery is counted against it.  Each claim then calls this script, which
-- moves what arrived since and feeds the stream from the lanes round-robin
-- (one run of each group with work waiting per turn, as many as the caller
-- is about to claim); the caller's XREADGROUP follows.  A fed entry
-- carries the field `lane` and keeps its `enq`; ticks and fed entries that
-- the move reads go back to the stream's end.  A moved entry stays in the
-- stream, acknowledged by the workers' group, for the history writer (its
-- own group) to record the run as queued; the writer skips fed entries.
-- When the lanes are empty the stream is plain FIFO again.
--
-- KEYS: 1 runs stream, 2 ring (list of lane names with entries, in turn
--       order), 3 state hash (cursor: the newest id looked at; n: runs in
--       the lanes; on: 1 while the lanes are on).
-- ARGV: 1 workers group, 2 want (entries the caller is about to claim),
--       3 threshold, 4 most entries moved per call, 5 lane key prefix,
--       6 FAIRER (the pseudo-consumer's name), 7 SAMPLE (newest arrivals
--       looked at).
-- Reply: {1 if the lanes are on else 0, runs in the lanes, moved, fed}.
-- include: lib/stream.lua
local runs, ring, st = KEYS[1], KEYS[2], KEYS[3]
local workers = ARGV[1]
local want, threshold, most, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local fairer, sample = ARGV[6], tonumber(ARGV[7])
if redis.call('EXISTS', runs) == 0 then return {0, 0, 0, 0} end

local last, lag
for _, g in ipairs(redis.call('XINFO', 'GROUPS', runs)) do
  local f = info_fields(g)
  if f['name'] == workers then last, lag = f['last-delivered-id'], f['lag'] end
end
if not last then return {0, 0, 0, 0} end

-- The lane of an entry's fields, or nil for one that stays in the stream
-- (a tick, a fed entry, anything that is not a plain run); then the entry's
-- type, and whether it has an `enq` field.
local function lane_of(fl)
  local typ, org, fed, enq
  for k = 1, #fl - 1, 2 do
    local key = fl[k]
    if key == 'type' then typ = fl[k + 1]
    elseif key == 'org' then org = fl[k + 1]
    elseif key == 'enq' then enq = true
    elseif key == 'lane' then fed = true end
  end
  if typ ~= 'run' or fed then return nil, typ, enq end
  if org == nil or org == '' then return '-', typ, enq end
  if #org > 128 then return nil, typ, enq end
  return 'o:' .. org, typ, enq
end

local s = redis.call('HMGET', st, 'cursor', 'n', 'on')
local cursor, n = s[1] or '0-0', tonumber(s[2] or '0')

if n == 0 and s[3] ~= '1' then
  local top = redis.call('XREVRANGE', runs, '+', '-', 'COUNT', 1)[1]
  if not top or (lag and lag <= threshold) then
    -- no backlog: nothing to look for
    redis.call('HSET', st, 'cursor', top and top[1] or last)
    return {0, 0, 0, 0}
  end
  -- the group at the head of the backlog, against the newest arrivals
  -- since the last look (at most SAMPLE of them: the look is cheap, and a
  -- single group's backlog is never read here)
  local head = redis.call('XRANGE', runs, '(' .. last, '+', 'COUNT', 1)[1]
  local function group_of(fl)
    local name, typ = lane_of(fl)
    return name or (typ == 'tick' and '!tick') or nil
  end
  local hg = head and group_of(head[2])
  local start = false
  if hg and id_less(cursor, top[1]) then
    local from = id_less(cursor, last) and last or cursor
    for _, e in ipairs(redis.call('XREVRANGE', runs, '+', '(' .. from, 'COUNT', sample)) do
      local g = group_of(e[2])
      if g and g ~= hg then start = true; break end
    end
  end
  redis.call('HSET', st, 'cursor', top[1])
  if not start then return {0, 0, 0, 0} end
end

-- The waiting entries (all of them may move: the originals stay in the
-- stream, acknowledged, for the history writer to read and trim to pass).
local movable = lag
if not movable then
  movable = #redis.call('XRANGE', runs, '(' .. last, '+', 'COUNT', most)
end
if movable > most then movable = most end

local moved, waiting = 0, (lag or 0)
if movable > 0 then
  local rep = redis.call('XREADGROUP', 'GROUP', workers, fairer, 'COUNT', movable, 'STREAMS', runs, '>')
  local es = rep and rep[1][2] or {}
  local add, order, ids, stays = {}, {}, {}, {}
  for _, e in ipairs(es) do
    local fl = e[2]
    ids[#ids + 1] = e[1]
    local name, _, enq = lane_of(fl)
    if name then
      if not enq then
        fl[#fl + 1] = 'enq'
        fl[#fl + 1] = string.match(e[1], '^(%d+)')
      end
      fl[#fl + 1] = 'lane'
      fl[#fl + 1] = '1'
      local t = add[name]
      if not t then t = {}; add[name] = t; order[#order + 1] = name end
      t[#t + 1] = cmsgpack.pack(fl)
      moved = moved + 1
    elseif #fl > 0 then
      stays[#stays + 1] = fl
    end
  end
  for i = 1, #ids, 1000 do
    redis.call('XACK', runs, workers, unpack(ids, i, math.min(i + 999, #ids)))
  end
  redis.call('XGROUP', 'DELCONSUMER', runs, workers, fairer)
  for _, name in ipairs(order) do
    local t = add[name]
    local len = 0
    for i = 1, #t, 1000 do
      len = redis.call('RPUSH', prefix .. name, unpack(t, i, math.min(i + 999, #t)))
    end
    if len == #t then redis.call('RPUSH', ring, name) end   -- a new lane joins the turn
  end
  -- ticks and fed entries wait at the stream's end, ahead of what is fed now
  for _, fl in ipairs(stays) do redis.call('XADD', runs, '*', unpack(fl)) end
  waiting = waiting - #ids + #stays
  n = n + moved
end
if waiting < 0 then waiting = 0 end

-- Feed: as many runs as the caller will claim beyond what already waits in
-- the stream, one of each lane per turn, over the first lanes of the ring
-- (at most one per run fed); the lanes served go to the ring's end.
local fed = 0
local room = want - waiting
if room > 0 and n > 0 then
  local names = redis.call('LRANGE', ring, 0, room - 1)
  local lens, take = {}, {}
  for i, name in ipairs(names) do lens[i] = redis.call('LLEN', prefix .. name); take[i] = 0 end
  local left, more = room, true
  while left > 0 and more do
    more = false
    for i = 1, #names do
      if left > 0 and take[i] < lens[i] then
        take[i] = take[i] + 1
        left = left - 1
        more = true
      end
    end
  end
  local got = {}
  for i, name in ipairs(names) do
    got[i] = take[i] > 0 and redis.call('LPOP', prefix .. name, take[i]) or {}
  end
  -- into the stream in turn order: the first of each lane, then the second...
  for k = 1, room do
    local any = false
    for i = 1, #names do
      local m = got[i][k]
      if m then
        redis.call('XADD', runs, '*', unpack(cmsgpack.unpack(m)))
        fed = fed + 1
        any = true
      end
    end
    if not any then break end
  end
  if #names > 0 then redis.call('LTRIM', ring, #names, -1) end
  for i, name in ipairs(names) do
    if take[i] < lens[i] then redis.call('RPUSH', ring, name) end
  end
  n = n - fed
end
if n <= 0 or redis.call('LLEN', ring) == 0 then n = 0 end
-- the lanes stay on while they hold runs or a backlog waits to be moved
local on = n > 0 or waiting > threshold
redis.call('HSET', st, 'n', n, 'on', on and '1' or '0')
return {on and 1 or 0, n, moved, fed}
