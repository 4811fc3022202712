-- Extend a held config lease and all its node slots (each GPU of a multi-GPU lease), only if the
-- caller still owns them all; and, in the same reply, tell the holder whether its job was asked
-- to stop (how cancel and preemption requests reach a running training without polling).
-- KEYS[1] config lease (string "token|fence|node|worker|job_id")   KEYS[2] node slot zset
-- KEYS[3] lease expiry zset (member: the lease's job id, score: its expiry in ms)
-- KEYS[4] the job hash (optional; fields cancel_requested, preempt_requested_at). Not under the
--         {lease} hash tag: with it the script needs one Redis, not a Cluster (README).
-- KEYS[5] the holder's termination notice (optional, `Keys.worker_notice`: its ephemeral host is
--         going away; set by the worker on SIGTERM)
-- ARGV[1] owner token   ARGV[2] ttl ms   ARGV[3] the lease's GPU count (absent: 1)
-- Returns {0} when the caller no longer holds the lease (or one of its slots expired and may be
-- another's now: never re-taken here); when extended {1, cancel_requested, preempt_requested_at,
-- notice} ('' each when not asked; the rule, cancel first, is coordinator.stores.job_records.stop_reason).
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return {0}
end
local members = {ARGV[1]}
for i = 2, tonumber(ARGV[3] or '1') do
  members[#members + 1] = ARGV[1] .. '+' .. i
end
for _, member in ipairs(members) do
  if not redis.call('ZSCORE', KEYS[2], member) then
    return {0}
  end
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
for _, member in ipairs(members) do
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), member)
end
local job_id = string.match(value, '^[^|]*|[^|]*|[^|]*|[^|]*|(.*)$')
if job_id then
  redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), job_id)
end
local notice = ''
if KEYS[5] then
  notice = redis.call('GET', KEYS[5]) or ''
end
if KEYS[4] then
  local asked = redis.call('HMGET', KEYS[4], 'cancel_requested', 'preempt_requested_at')
  return {1, asked[1] or '', asked[2] or '', notice}
end
return {1, '', '', notice}
