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
--       for ('' = none), 12 about how many bytes of values a stream read
--       reads per direction, 13... candidate jr:delayed members of that entry's
--       run (the exact members a consumer would have parked or deferred it
--       as: runlookup.c builds them from the entry as the consumer does).
-- jr:delayed is searched by the candidates' scores (ZMSCORE) when the
-- newest entry is the one they are for; else by the entry's runat, or
-- among the members due from ARGV[8] on (bounded).
-- Every read is bounded: a stream is read in at most three parts (forward
-- from the run's time, backward from the end, the clock margin before the
-- run's time), each at most ARGV[4] (ARGV[5]) entries and about ARGV[12]
-- bytes.  Nothing is written.
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
local bytes = tonumber(ARGV[12])

local function field(fl, k)
  for i = 1, #fl - 1, 2 do
    if fl[i] == k then return fl[i + 1] end
  end
  return nil
end

-- The bytes of an entry's field values (what reading it costs).
local function size_of(fl)
  local n = 0
  for i = 2, #fl, 2 do n = n + #fl[i] end
  return n
end

-- Reads stream key from a toward b (XRANGE a b forward, XREVRANGE a b
-- backward), at most cap entries and about `bytes` bytes of values, in
-- chunks sized from the entries read so far (large payloads cost no more
-- than small ones).  Returns the newest entry match() accepts (or nil), the
-- last id read, and whether the range was read to its end (backward: or to
-- a match, the newest there is).
local function read(key, fwd, a, b, cap, match)
  local found, n, used, last = nil, 0, 0, nil
  while n < cap and used < bytes do
    local want = math.min(10, cap - n)
    if n > 0 then
      want = math.max(1, math.min(100, cap - n, math.floor((bytes - used) / math.max(1, used / n))))
    end
    local es = redis.call(fwd and 'XRANGE' or 'XREVRANGE', key, a, b, 'COUNT', want)
    for _, e in ipairs(es) do
      if match(e[2]) then
        if not fwd then return e, e[1], true end
        found = e
      end
      used = used + size_of(e[2])
      last = e[1]
    end
    n = n + #es
    if #es < want then return found, last, true end
    a = '(' .. last
  end
  return found, last, false
end

-- The newest entry of stream key that match() accepts.  The run's own
-- entries are at or after its time (less the clock margin): read forward
-- from just before its time (`near`); if that is cut short, backward from
-- the end down to where it stopped (later entries of the run: retries,
-- promotions, lanes fed back); then the clock margin before `near`.
-- Returns the entry (or nil) and whether every part was read to its end.
local near = from
if from ~= '-' then near = string.format('%d-0', (lo_ms + hi_ms) / 2 - 100) end
local function newest(key, cap, match)
  if redis.call('EXISTS', key) == 0 then return nil, true end
  local found, last, all = read(key, true, near, '+', cap, match)
  if not all then
    local f2, _, all2 = read(key, false, '+', '(' .. last, cap, match)
    if f2 then found = f2 end
    all = all2
  end
  if near ~= from then
    local f3, _, all3 = read(key, true, from, '(' .. near, cap, match)
    if f3 and not found then found = f3 end
    all = all and all3
  end
  return found, all
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

-- Reads up to n items (step reply elements each) with fetch(offset, count)
-- in chunks, against one byte budget shared by the lanes and jr:delayed
-- (chunks sized from the members read so far); test(list, i) returns what
-- it found, or nil.  Returns the find (or nil) and why it stopped: 'end'
-- (fetch gave fewer than asked), 'n' (n items read) or 'bytes'.
local mused, mseen = 0, 0
local function scan(fetch, n, step, test)
  local off = 0
  while off < n do
    if mused >= bytes then return nil, 'bytes' end
    local want = math.min(10, n - off)
    if mseen > 0 then
      want = math.max(1, math.min(100, n - off, math.floor((bytes - mused) / math.max(1, mused / mseen))))
    end
    local got = fetch(off, want)
    for i = 1, #got, step do
      mused, mseen = mused + #got[i], mseen + 1
      local r = test(got, i)
      if r then return r, 'end' end
    end
    if #got < want * step then return nil, 'end' end
    off = off + want
  end
  return nil, 'n'
end

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
  local n = math.min(room, len - first)
  budget = budget - n
  local fl, why = scan(function(off, cnt)
    return redis.call('LRANGE', key, first + off, first + off + cnt - 1)
  end, n, 1, function(list, i)
    if string.find(list[i], id, 1, true) then
      local t = cmsgpack.unpack(list[i])
      if field(t, 'id') == id then return t end
    end
    return nil
  end)
  if fl then return fl, true end
  return nil, all and why ~= 'bytes'
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
    local function member(list, i)
      if string.find(list[i], needle, 1, true) then
        local ok, t = pcall(cjson.decode, list[i])
        if ok and type(t) == 'table' and t.id == id then return { t, tonumber(list[i + 1]) } end
      end
      return nil
    end
    local found, why = nil, 'end'
    local most = math.max(budget, 64)
    if e and ARGV[11] == e[1] and #ARGV > 12 then
      -- the exact members: complete, however many runs wait there
      local sc = redis.call('ZMSCORE', delayed, unpack(ARGV, 13, #ARGV))
      for i = 1, #sc do
        if sc[i] then found = { cjson.decode(ARGV[12 + i]), tonumber(sc[i]) }; break end
      end
    elseif runat or lo_ms >= 0 then
      -- parked as read early: its runat is the score; a deferral: due
      -- after the run was made
      local lo, hi = runat or lo_ms, runat or '+inf'
      found, why = scan(function(off, cnt)
        return redis.call('ZRANGEBYSCORE', delayed, lo, hi, 'WITHSCORES', 'LIMIT', off, cnt)
      end, most, 2, member)
    elseif redis.call('ZCARD', delayed) > 0 then
      why = 'n'   -- an id without a time: not searched
    end
    if found then
      for k, v in pairs(found[1]) do
        if type(v) == 'string' then wfields[#wfields + 1] = k; wfields[#wfields + 1] = v end
      end
      where, score = 'delayed', found[2]
    elseif why ~= 'end' then
      waiting_all = false
    end
  end
end

return { e and e[1] or '', e and e[2] or {}, state, owner, count, runs_all and 1 or 0,
         ev and ev[1] or '', ev and ev[2] or {}, events_all and 1 or 0,
         where, wfields, score, waiting_all and 1 or 0 }
