-- lookup.lua -- what Redis holds of one run, read-only, for GET /runs/{id}
-- when job_runs has no row of it (JOB_HISTORY=failures records no row for a
-- success at the first attempt, nor for a queued or running run; see
-- common/runlookup.c, which decides the run's state from this reply).
-- KEYS: 1 runs stream, 2 events stream, 3 delayed ZSET, 4 lanes ring
--       (jr:lanes), 5 fairness state hash (jr:fair).
-- ARGV: 1 run id, 2 first stream id to look at ("<ms>-0": the run id's
--       time less the clock margin, or "-" for an id that tells no time),
--       3 workers group, 4 most stream entries read per stream and
--       direction, 5 most events entries likewise, 6 most lane or delayed
--       members read in all, 7 lane key prefix, 8 the run's time less the
--       margin (ms, or -1), 9 the run's time plus the margin (ms, or -1),
--       10 most lanes searched, 11 the entry id the candidates below are
--       for ('' = none), 12... candidate jr:delayed members of that entry's
--       run (the exact members a consumer would have parked or deferred it
--       as: runlookup.c builds them from the entry as the consumer does).
-- jr:delayed is searched by the candidates' scores (ZMSCORE) when the
-- newest entry is the one they are for; else by the entry's runat, or
-- among the members due from ARGV[8] on (bounded).
-- Every read is bounded: a stream is read forward from ARGV[2] (in chunks)
-- and, if that stopped at its bound, backward from its end, each at most
-- ARGV[4] (ARGV[5]) entries.  Nothing is written.
-- Reply: {entry id or '', entry fields (flat) or {}, entry state ('queued':
-- after the group's last delivered id, 'pending', 'acked', or ''), pending
-- consumer or '', deliveries (0), runs read completely (0/1), event entry id
-- or '', event entry fields or {}, events read completely (0/1), where the
-- run waits ('lane', 'delayed' or ''), its fields there (flat) or {}, the
-- score (due ms) of a delayed member or 0, waiting places searched
-- completely (0/1)}.
-- include: lib/stream.lua
local runs, events, delayed, ring, st = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, from, workers = ARGV[1], ARGV[2], ARGV[3]
local cap_runs, cap_events, cap_members = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local prefix, lo_ms, hi_ms, max_lanes = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local CHUNK = 50

local function field(fl, k)
  for i = 1, #fl - 1, 2 do
    if fl[i] == k then return fl[i + 1] end
  end
  return nil
end

-- The newest entry of stream key that match() accepts: read forward from
-- `from` (at most cap entries), then, if that was cut short, backward from
-- the end down to where the forward read stopped (at most cap entries).
-- Returns the entry (or nil) and whether the read covered the whole range.
local function newest(key, cap, match)
  if redis.call('EXISTS', key) == 0 then return nil, true end
  local found, start, n, last = nil, from, 0, nil
  while n < cap do
    local es = redis.call('XRANGE', key, start, '+', 'COUNT', math.min(CHUNK, cap - n))
    for _, e in ipairs(es) do
      if match(e[2]) then found = e end
      last = e[1]
    end
    n = n + #es
    if #es < CHUNK then return found, true end
    start = '(' .. last
  end
  -- cut short: the newest entries, from the end backward
  local stop, m, top = last, 0, '+'
  while m < cap do
    local es = redis.call('XREVRANGE', key, top, '(' .. stop, 'COUNT', math.min(CHUNK, cap - m))
    for _, e in ipairs(es) do
      if match(e[2]) then return e, true end
      top = '(' .. e[1]
    end
    m = m + #es
    if #es < CHUNK then return found, true end
  end
  return found, false
end

local e, runs_all = newest(runs, cap_runs, function(fl)
  return field(fl, 'id') == id and field(fl, 'type') == 'run'
end)
local needle = '"id":"' .. id .. '"'
local ev, events_all = newest(events, cap_events, function(fl)
  local s = field(fl, 'e')
  return s ~= nil and string.find(s, needle, 1, true) ~= nil
end)

-- the entry's state in the workers group
local state, owner, count = '', '', 0
if e then
  local last
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', runs)) do
    local f = info_fields(g)
    if f['name'] == workers then last = f['last-delivered-id'] end
  end
  if not last or id_less(last, e[1]) then
    state = 'queued'
  else
    local p = redis.call('XPENDING', runs, workers, e[1], e[1], 1)[1]
    if p then
      state, owner, count = 'pending', p[2], p[4]
    else
      state = 'acked'
    end
  end
end

-- Acknowledged, or no entry at all: the run may wait in a lane (moved
-- there by fair.lua) or in jr:delayed (a delayed run parked, a deferral).
local where, wfields, score, waiting_all = '', {}, 0, true
local budget = cap_members

-- the members of list key that hold the run: the whole list if it is
-- short, else a window from the first member not older than lo_ms (the
-- list is in arrival order: binary search over enq / runat).
local function in_lane(key, room)
  local len = redis.call('LLEN', key)
  if len == 0 then return nil, true end
  local first, all = 0, true
  if len > room then
    if lo_ms < 0 then return nil, false end
    local function when(i)
      local fl = cmsgpack.unpack(redis.call('LRANGE', key, i, i)[1])
      return math.max(tonumber(field(fl, 'enq') or '0') or 0, tonumber(field(fl, 'runat') or '0') or 0)
    end
    local a, b = 0, len
    while a < b do
      local mid = math.floor((a + b) / 2)
      if when(mid) < lo_ms then a = mid + 1 else b = mid end
    end
    first = a
    -- complete if the window reaches the list's end or a member newer
    -- than the run's time plus the margin
    local lastpos = math.min(first + room, len) - 1
    all = lastpos == len - 1 or (lastpos >= first and when(lastpos) > hi_ms)
  end
  budget = budget - math.min(room, len - first)
  for _, m in ipairs(redis.call('LRANGE', key, first, first + room - 1)) do
    if string.find(m, id, 1, true) then
      local fl = cmsgpack.unpack(m)
      if field(fl, 'id') == id then return fl, true end
    end
  end
  return nil, all
end

local function lane_of(fl)
  local org = field(fl, 'org')
  if field(fl, 'lane') or field(fl, 'type') ~= 'run' then return nil end
  if org == nil or org == '' then return '-' end
  if #org > 128 then return nil end
  return 'o:' .. org
end

if state == 'acked' or not e then
  local inlanes = tonumber(redis.call('HGET', st, 'n') or '0') or 0
  if inlanes > 0 then
    local names
    if e then
      local ln = lane_of(e[2])
      names = ln and { ln } or {}
    else
      names = redis.call('LRANGE', ring, 0, max_lanes - 1)
      if redis.call('LLEN', ring) > max_lanes then waiting_all = false end
    end
    local room = #names > 0 and math.max(64, math.floor(cap_members / #names)) or 0
    for _, ln in ipairs(names) do
      local fl, all = in_lane(prefix .. ln, room)
      if fl then where, wfields = 'lane', fl; break end
      if not all then waiting_all = false end
    end
  end
  if where == '' and redis.call('EXISTS', delayed) == 1 then
    local runat = e and tonumber(field(e[2], 'runat') or '')
    local ms
    if e and ARGV[11] == e[1] and #ARGV > 11 then
      -- the exact members: complete, however many runs wait there
      ms = {}
      local sc = redis.call('ZMSCORE', delayed, unpack(ARGV, 12, #ARGV))
      for i = 1, #sc do
        if sc[i] then ms[1] = ARGV[11 + i]; ms[2] = sc[i]; break end
      end
    elseif runat then
      -- a delayed run read early is parked with its runat as the score
      ms = redis.call('ZRANGEBYSCORE', delayed, runat, runat, 'WITHSCORES', 'LIMIT', 0, math.max(budget, 64))
    elseif lo_ms >= 0 then
      -- a deferral: due after the run was made
      ms = redis.call('ZRANGEBYSCORE', delayed, lo_ms, '+inf', 'WITHSCORES', 'LIMIT', 0, math.max(budget, 64))
      if #ms / 2 >= math.max(budget, 64) then waiting_all = false end
    else
      ms = {}
      if redis.call('ZCARD', delayed) > 0 then waiting_all = false end
    end
    for i = 1, #ms - 1, 2 do
      if string.find(ms[i], needle, 1, true) then
        local ok, t = pcall(cjson.decode, ms[i])
        if ok and type(t) == 'table' and t.id == id then
          for k, v in pairs(t) do
            if type(v) == 'string' then wfields[#wfields + 1] = k; wfields[#wfields + 1] = v end
          end
          where, score = 'delayed', tonumber(ms[i + 1])
          break
        end
      end
    end
    if where == '' then wfields = {} end
  end
end

return { e and e[1] or '', e and e[2] or {}, state, owner, count, runs_all and 1 or 0,
         ev and ev[1] or '', ev and ev[2] or {}, events_all and 1 or 0,
         where, wfields, score, waiting_all and 1 or 0 }
