-- lib/stream.lua -- helpers shared by the scripts that read stream ids and
-- XINFO replies.  Not a script of its own: a script that needs it says
--   -- include: lib/stream.lua
-- on a line of its own, and cmake/embed_lua.cmake puts this file's text in
-- that line's place (EVAL scripts cannot load modules).

-- Splits a stream id "<ms>-<seq>" into two numbers.
local function id_split(id)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end

-- true if stream id x comes before stream id y.
local function id_less(x, y)
  local a1, b1 = id_split(x)
  local a2, b2 = id_split(y)
  if a1 ~= a2 then return a1 < a2 end
  return b1 < b2
end

-- The smallest stream id after id.
local function id_next(id)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  return a .. '-' .. string.format('%d', tonumber(b) + 1)
end

-- An XINFO entry (a flat name, value, name, value... array) as a table.
local function info_fields(flat)
  local t = {}
  for k = 1, #flat, 2 do t[flat[k]] = flat[k + 1] end
  return t
end
