-- Cancel a job in one step: a waiting job is cancelled at once (with its event), a running one is
-- asked to stop (its worker stops the trainer); either way its config first waits for a newer export.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] delayed-job zset
-- KEYS[5] the config's hash   KEYS[6] RQ's training queue (list of RQ job ids)
-- ARGV[1] JSON: now, maxlen, job_id, config_key, to (the cancelled state), waiting (states
--   cancelled at once), running (states asked to stop: an attempt runs), evt (flat field-value
--   list; 'state_was' is appended), reason (the record's `reason`: cancelled)
-- Returns the cancelled state ('cancelled'), 'requested', 'ended' (already final) or 'missing' (no such job).
local a = args()
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  return 'missing'
end
local waiting, running = listed(a.waiting, state), listed(a.running, state)
if not (waiting or running) then
  return 'ended'
end
-- Before the job ends: the scheduler must not hand the same data straight back.
config_cancelled(KEYS[5], a.now)
if running then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'requested'
end
redis.call('HSET', KEYS[1], 'state', a.to, 'updated_at', a.now, 'reason', a.reason)
if redis.call('HGET', KEYS[3], a.config_key) == a.job_id then
  redis.call('HDEL', KEYS[3], a.config_key)
end
redis.call('ZREM', KEYS[4], a.job_id)
redis.call('LREM', KEYS[6], 1, redis.call('HGET', KEYS[1], 'rq_job_id') or a.job_id)
local evt = a.evt
evt[#evt + 1] = 'state_was'
evt[#evt + 1] = state
xadd_trimmed(KEYS[2], a.maxlen, unpack(evt))
return a.to  -- 'cancelled' (the state it moved to)
