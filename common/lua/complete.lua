-- complete.lua -- records the outcomes of a batch of claimed runs, fenced.
-- KEYS: 1 runs stream, 2 events stream (jr:events), 3 delayed ZSET,
--       4 dead counter, 5 cancel requests ZSET (jr:cancel).
-- ARGV: 1 workers group, 2 consumer name, 3 n (runs in the batch), 4 lowest
--       and 5 highest entry id of the batch, then 7 values per run: entry id,
--       fence (delivery count seen at claim), kind, due ms, delayed member,
--       event (JSON object, '' = none), run id ('' = none).
--       kind: a = ack only, e = ack + event, d = + delayed member,
--       x = + dead count, c = ack + event (cancelled) + the cancel request
--       marked done (its score negated: kept an hour, so that a later
--       request is told the run had finished), s = ack only unless the run
--       has a cancel request (then as c): a success that JOB_HISTORY=failures
--       does not record (its event would be read only to be dropped).
-- A run with a cancel request that ends otherwise (it finished before it
-- saw the request) is recorded cancelled all the same: the request was
-- answered as accepted, so that is the run's one final state.
-- Ownership and fences come from one XPENDING over the batch's id range
-- (per entry only if that range holds too many of this consumer's entries).
-- The events of the batch go into one jr:events entry: v=1 n=<count>
-- e=<JSON array of the events>.
-- Reply: one integer per run: 0 recorded, 1 fenced (not owned any more, or
-- delivered again since the claim).
local g, me, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ncancel = redis.call('ZCARD', KEYS[5])
local lim = n * 4 + 64
local pl = redis.call('XPENDING', KEYS[1], g, ARGV[4], ARGV[5], lim, me)
local pend = {}
for _, p in ipairs(pl) do pend[p[1]] = p[4] end
local out, acks, evs = {}, {}, {}
for r = 1, n do
  local i = 6 + (r - 1) * 7
  local h, kind = ARGV[i], ARGV[i + 2]
  local cnt = pend[h]
  if cnt == nil and #pl == lim then
    local p = redis.call('XPENDING', KEYS[1], g, h, h, 1, me)[1]
    cnt = p and p[4]
  end
  if cnt ~= nil and cnt == tonumber(ARGV[i + 1]) then
    out[r] = 0
    acks[#acks + 1] = h
    local ev, id = ARGV[i + 5], ARGV[i + 6]
    if kind ~= 'c' and kind ~= 'a' and ev ~= '' and id ~= '' and ncancel > 0
       and redis.call('ZSCORE', KEYS[5], id) then
      local t = cjson.decode(ev)
      t.error = 'cancelled (the run had ended ' .. tostring(t.status) .. ' when it saw the request)'
      t.status = 'cancelled'
      t.runat = nil
      ev, kind = cjson.encode(t), 'c'
    end
    if kind == 'd' then redis.call('ZADD', KEYS[3], ARGV[i + 3], ARGV[i + 4]) end
    if kind == 'x' then redis.call('INCR', KEYS[4]) end
    if kind == 'c' then
      local sc = tonumber(redis.call('ZSCORE', KEYS[5], id))
      if sc and sc > 0 then redis.call('ZADD', KEYS[5], 'XX', -sc, id) end
    end
    if kind == 's' then ev = '' end
    if ev ~= '' then evs[#evs + 1] = ev end
  else
    out[r] = 1
  end
end
if #acks > 0 then redis.call('XACK', KEYS[1], g, unpack(acks)) end
if #evs > 0 then
  redis.call('XADD', KEYS[2], '*', 'v', '1', 'n', #evs, 'e', '[' .. table.concat(evs, ',') .. ']')
end
return out
