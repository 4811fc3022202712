-- Move a job to another state if it is in one of the allowed states, atomically with its event.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] delayed-job zset
-- ARGV[1] JSON: now, maxlen, job_id, config_key, to (target state), from (allowed states,
--   job_states.TRANSITIONS), release_active ('1': free the config's active slot), wake_at (time to
--   wake it, '' : none), undelay ('1': take it off the delayed set), expected_fence ('' : any),
--   job / evt (flat field-value lists; an empty evt: no event)
-- Returns {1, previous state} when moved, {0, current state} when not allowed.
local a = args()
local state = redis.call('HGET', KEYS[1], 'state') or ''
if not listed(a.from, state) or (a.expected_fence ~= '' and (redis.call('HGET', KEYS[1], 'fence') or '') ~= a.expected_fence) then
  return {0, state}
end
redis.call('HSET', KEYS[1], 'state', a.to, 'updated_at', a.now, unpack(a.job))
if a.release_active == '1' and redis.call('HGET', KEYS[3], a.config_key) == a.job_id then
  redis.call('HDEL', KEYS[3], a.config_key)
end
if a.wake_at ~= '' then
  redis.call('ZADD', KEYS[4], a.wake_at, a.job_id)
end
if a.undelay == '1' then
  redis.call('ZREM', KEYS[4], a.job_id)
end
if #a.evt > 0 then
  xadd_trimmed(KEYS[2], a.maxlen, unpack(a.evt))
end
return {1, state}
