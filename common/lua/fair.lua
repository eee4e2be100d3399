-- fair.lua -- fair scheduling across orgs in Redis mode (docs/architecture.md,
-- "Fairness across orgs"; keys in docs/protocol.md).
--
-- Runs enter jr:runs in arrival order.  While one group (an org, or the runs
-- without an org) is alone in the stream, nothing moves: the script only
-- scans the new entries once (a cursor) to see whether another group, or a
-- tick, has arrived behind a backlog.  When one has and more than THRESHOLD
-- entries wait, the lanes start: every waiting run entry is moved out of the
-- stream into the list of its group (its lane, the entry's fields packed
-- with cmsgpack; XDEL from the stream, RPUSH to the lane, in this script), and
-- each claim feeds the stream from the lanes round-robin, one run of each
-- group with work waiting per turn, as many as the caller is about to claim.
-- A fed entry carries the field `lane` (the scan leaves it alone) and keeps
-- its `enq`.  Ticks and entries that are not runs never move.  When the
-- lanes are empty the stream is plain FIFO again.
--
-- KEYS: 1 runs stream, 2 ring (list of lane names with entries, in turn
--       order), 3 state hash (cursor: last id scanned; group: the group seen
--       alone; n: entries in the lanes).
-- ARGV: 1 workers group, 2 want (entries the caller is about to claim),
--       3 threshold (waiting entries above which a second group starts the
--       lanes), 4 most entries scanned per call, 5 lane key prefix,
--       6 history group (entries it has not read yet are not moved).
-- Reply: {entries in the lanes, entries fed, entries moved}.
-- include: lib/stream.lua
local runs, ring, st = KEYS[1], KEYS[2], KEYS[3]
local want, threshold, most, prefix = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if redis.call('EXISTS', runs) == 0 then return {0, 0, 0} end

local last, recorded
for _, g in ipairs(redis.call('XINFO', 'GROUPS', runs)) do
  local f = info_fields(g)
  if f['name'] == ARGV[1] then last = f['last-delivered-id'] end
  if f['name'] == ARGV[6] then recorded = f['last-delivered-id'] end
end
if not last then return {0, 0, 0} end

-- entries waiting in the stream (not yet delivered), counted up to cap
local function waiting(cap)
  return #redis.call('XRANGE', runs, '(' .. last, '+', 'COUNT', cap)
end

local s = redis.call('HMGET', st, 'cursor', 'group', 'n')
local cursor, alone, n = s[1] or '0-0', s[2], tonumber(s[3] or '0')
if id_less(cursor, last) then cursor = last end

-- The lane of an entry's fields: its name, or nil for an entry that stays
-- (a tick, a fed entry, anything that is not a plain run).
local function lane_of(fl)
  local typ, org, fed
  for k = 1, #fl - 1, 2 do
    local key = fl[k]
    if key == 'type' then typ = fl[k + 1]
    elseif key == 'org' then org = fl[k + 1]
    elseif key == 'lane' then fed = true end
  end
  if typ ~= 'run' or fed then return nil, typ end
  if org == nil or org == '' then return '-', typ end
  if #org > 128 then return nil, typ end
  return 'o:' .. org, typ
end

local moved = 0
if n == 0 then
  -- one group alone? scan what arrived since the cursor
  local es = redis.call('XRANGE', runs, '(' .. cursor, '+', 'COUNT', most)
  local start = false
  for _, e in ipairs(es) do
    local name, typ = lane_of(e[2])
    local g = name or (typ == 'tick' and '!tick') or nil
    if g then
      if not alone or alone == '' then
        alone = g
      elseif g ~= alone then
        if waiting(threshold + 1) > threshold then start = true; break end
        alone = g
      end
    end
    cursor = e[1]
  end
  if start then cursor = last end   -- the lanes take every waiting run
  redis.call('HSET', st, 'cursor', cursor, 'group', alone or '')
  if not start then return {0, 0, 0} end
end

-- The lanes are on: move the runs that arrived since the cursor.
local es = redis.call('XRANGE', runs, '(' .. cursor, '+', 'COUNT', most)
local add, order, ids = {}, {}, {}
for _, e in ipairs(es) do
  -- only what the history writer has read: job_runs shows a run waiting
  -- in a lane as queued (the entry leaves the stream here)
  if recorded and id_less(recorded, e[1]) then break end
  local fl = e[2]
  local name = lane_of(fl)
  if name then
    local has_enq = false
    for k = 1, #fl - 1, 2 do if fl[k] == 'enq' then has_enq = true end end
    if not has_enq then
      fl[#fl + 1] = 'enq'
      fl[#fl + 1] = string.match(e[1], '^(%d+)')
    end
    if not add[name] then add[name] = {}; order[#order + 1] = name end
    local t = add[name]
    t[#t + 1] = cmsgpack.pack(fl)
    ids[#ids + 1] = e[1]
  end
  cursor = e[1]
end
for _, name in ipairs(order) do
  local t = add[name]
  local len = 0
  for i = 1, #t, 1000 do
    len = redis.call('RPUSH', prefix .. name, unpack(t, i, math.min(i + 999, #t)))
  end
  if len == #t then redis.call('RPUSH', ring, name) end   -- a new lane joins the turn
end
for i = 1, #ids, 1000 do
  redis.call('XDEL', runs, unpack(ids, i, math.min(i + 999, #ids)))
end
moved = #ids
n = n + moved

-- Feed: one run of each lane per turn, up to what the caller will claim
-- beyond what already waits in the stream.
local fed = 0
local room = want - waiting(want)
while room > 0 and n > 0 do
  local name = redis.call('LPOP', ring)
  if not name then n = 0; break end
  local m = redis.call('LPOP', prefix .. name)
  if m then
    local fl = cmsgpack.unpack(m)
    fl[#fl + 1] = 'lane'
    fl[#fl + 1] = '1'
    redis.call('XADD', runs, '*', unpack(fl))
    fed = fed + 1
    room = room - 1
    n = n - 1
    if redis.call('LLEN', prefix .. name) > 0 then redis.call('RPUSH', ring, name) end
  end
end
if n <= 0 and redis.call('LLEN', ring) == 0 then n = 0 end
redis.call('HSET', st, 'cursor', cursor, 'n', n, 'group', '')
return {n, fed, moved}
