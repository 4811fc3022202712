-- Extend a held config lease and its node slot, only if the caller still owns them; and, in the
-- same reply, tell the holder whether its job was asked to stop (how cancel and preemption
-- requests reach a running training without polling).
-- KEYS[1] config lease (string "token|fence|node|worker|job_id")   KEYS[2] node slot zset
-- KEYS[3] lease expiry zset (member: the lease's job id, score: its expiry in ms)
-- KEYS[4] the job hash (optional; fields cancel_requested, preempt_requested_at). Not under the
--         {lease} hash tag: with it the script needs one Redis, not a Cluster (README).
-- ARGV[1] owner token   ARGV[2] ttl ms
-- Returns {0} when the caller no longer holds the lease; when extended {1, cancel_requested,
-- preempt_requested_at} ('' each when not asked; the rule, cancel first, is
-- coordinator.scheduling.preempter.stop_reason).
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return {0}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[1])
local job_id = string.match(value, '^[^|]*|[^|]*|[^|]*|[^|]*|(.*)$')
if job_id then
  redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), job_id)
end
if KEYS[4] then
  local asked = redis.call('HMGET', KEYS[4], 'cancel_requested', 'preempt_requested_at')
  return {1, asked[1] or '', asked[2] or ''}
end
return {1, '', ''}
