-- Move a job to another state if it is in one of the allowed states, atomically with its event.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] delayed-job zset
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] job id   ARGV[3] config key   ARGV[4] target state
-- ARGV[5] allowed "from" states, comma-separated (job_states.TRANSITIONS)
-- ARGV[6] '1': free the config's active slot   ARGV[7] unix time to wake it ('' : none)
-- ARGV[8] '1': take it off the delayed set    ARGV[9] expected fencing token ('' : any)
-- ARGV[10] n_job field/value pairs (from ARGV[12])   ARGV[11] n_evt pairs (after; 0: no event)
-- Returns {1, previous state} when moved, {0, current state} when not allowed.
local state = redis.call('HGET', KEYS[1], 'state') or ''
local ok = listed(ARGV[5], state)
if not ok or (ARGV[9] ~= '' and (redis.call('HGET', KEYS[1], 'fence') or '') ~= ARGV[9]) then
  return {0, state}
end
local now_s = time_s()
local job, evt_i = pairs_from(12, tonumber(ARGV[10]))
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'updated_at', now_s, unpack(job))
if ARGV[6] == '1' and redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[2])
end
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[4], ARGV[2])
end
if tonumber(ARGV[11]) > 0 then
  xadd_trimmed(KEYS[2], ARGV[1], unpack((pairs_from(evt_i, tonumber(ARGV[11])))))
end
return {1, state}
