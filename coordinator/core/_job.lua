-- Prepended by coordinator/core/lua.py to every script: the job scripts' shared helpers.
-- listed(csv, value): whether `value` is one of the comma-separated `csv` (the allowed "from" states).
local function listed(csv, value)
  for s in string.gmatch(csv, '[^,]+') do
    if s == value then return true end
  end
  return false
end
-- time_s(): the Redis server's clock as 'seconds.micros' (the job records' timestamps).
local function time_s()
  local now = redis.call('TIME')
  return now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
end
-- pairs_from(first, count): ARGV[first ..] as `count` field/value pairs (a flat list), and the index after them.
local function pairs_from(first, count)
  local out = {}
  for j = first, first + 2 * count - 1 do out[#out + 1] = ARGV[j] end
  return out, first + 2 * count
end
