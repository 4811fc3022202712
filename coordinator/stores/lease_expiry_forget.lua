-- Drop the reaper's handled entries from the lease expiry zset, each only while it is still past
-- its time: an entry a new attempt of the same job set (acquire, renew) since the reaper read it
-- is kept.
-- KEYS[1] lease expiry zset (member: job id, score: the lease's expiry in ms)
-- ARGV job ids
-- Returns the number of entries removed.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local removed = 0
for _, job_id in ipairs(ARGV) do
  local expiry = redis.call('ZSCORE', KEYS[1], job_id)
  if expiry and tonumber(expiry) <= now_ms then
    removed = removed + redis.call('ZREM', KEYS[1], job_id)
  end
end
return removed
