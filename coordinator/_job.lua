-- Prepended by coordinator/lua.py to every script: the job scripts' shared checks.
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
