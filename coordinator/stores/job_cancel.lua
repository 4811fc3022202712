-- Cancel a job in one step: a waiting job is cancelled at once (with its event), a running one is
-- asked to stop (its worker stops the trainer); either way its config first waits for a newer export.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] delayed-job zset
-- KEYS[5] the config's hash   KEYS[6] RQ's training queue (list of RQ job ids)
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] job id   ARGV[3] config key   ARGV[4] unix time now
-- ARGV[5] the cancelled state   ARGV[6] states cancelled at once, comma-separated (waiting)
-- ARGV[7] states asked to stop, comma-separated (an attempt runs)
-- ARGV[8] n event field/value pairs (from ARGV[9]; 'state_was' is appended)
-- Returns 'cancelled', 'requested', 'ended' (already final) or 'missing' (no such job).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
local waiting, running = listed(ARGV[6], state), listed(ARGV[7], state)
if not (waiting or running) then
  return 'ended'
end
-- Before the job ends: the scheduler must not hand the same data straight back.
redis.call('HSET', KEYS[5], 'cancelled_at', ARGV[4])
if running then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'requested'
end
redis.call('HSET', KEYS[1], 'state', ARGV[5], 'updated_at', time_s(),
           'reason', 'cancelled')
if redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('LREM', KEYS[6], 1, redis.call('HGET', KEYS[1], 'rq_job_id') or ARGV[2])
local evt = {}
for i = 9, 8 + 2 * tonumber(ARGV[8]) do evt[#evt + 1] = ARGV[i] end
evt[#evt + 1] = 'state_was'
evt[#evt + 1] = state
xadd_trimmed(KEYS[2], ARGV[1], unpack(evt))
return 'cancelled'
