-- Record the end of a job attempt (complete, failed, retrying or cancelled), free its config
-- (unless it will retry) and announce it, atomically.
-- Fencing: a success whose fencing token is no longer the config's newest (or no longer the job's)
-- publishes nothing; it is recorded as stale and TRAINING_FAILED with reason `fenced` is emitted.
-- A failure of an attempt that is no longer the job's is announced but leaves the job alone.
-- On success the new samples the job covered are taken off the config's count.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] config hash
-- KEYS[5] the config's fencing counter   KEYS[6] delayed-job zset (retries wait there)
-- KEYS[7] the config's published models (list, newest first)
-- ARGV[1] JSON: now, maxlen, job_id, config_key, to (the final state), from (allowed states),
--   complete (the success state), stale (the fenced state), attempt_states (states of a running
--   attempt), failed_event (TRAINING_FAILED), fence ('' when run without a lease), node, attempt,
--   job / cfg / evt (flat field-value lists: the job's fields, the config's on success, the event
--   with its `type`), retry_at ('' : none), model (the entry a completed attempt publishes: its
--   model and command, stores/jobs.py; '' : none),
--   models_kept (on KEYS[7])
-- An end that leaves the config without a job starts its wait (`waiting_since`) when new samples
-- are left, else clears it.
-- Returns 1 when recorded, 2 when fenced or stale, 0 when the job was not running (ended elsewhere).
local a = args()
local function release_active()
  if redis.call('HGET', KEYS[3], a.config_key) == a.job_id then
    redis.call('HDEL', KEYS[3], a.config_key)
  end
end

local current = redis.call('HGET', KEYS[1], 'fence') or ''
if a.fence ~= '' then
  local newest = redis.call('GET', KEYS[5]) or ''
  if a.to == a.complete and (newest ~= a.fence or current ~= a.fence) then
    -- A result from an attempt that is no longer the newest holder: never published.
    local error = 'fenced: fencing token ' .. a.fence .. ' is not the newest (' .. newest .. '); result not published'
    if current == a.fence and listed(a.attempt_states, redis.call('HGET', KEYS[1], 'state') or '') then
      redis.call('HSET', KEYS[1], 'state', a.stale, 'error', error, 'reason', 'fenced',
        'finished_at', a.now, 'updated_at', a.now)
      release_active()
    end
    redis.call('HSET', KEYS[1], 'last_stale_attempt', a.attempt, 'last_stale_at', a.now)
    local config = redis.call('HMGET', KEYS[1], 'board_type', 'num_players')
    xadd_trimmed(KEYS[2], a.maxlen, 'type', a.failed_event,
      'job_id', a.job_id, 'config_key', a.config_key, 'board_type', config[1] or '', 'num_players', config[2] or '',
      'reason', 'fenced', 'error', error, 'attempt', a.attempt, 'node', a.node, 'fence', a.fence)
    return 2
  end
  if current ~= a.fence then
    -- A failure of an older attempt: reported, but the job belongs to a newer attempt now.
    redis.call('HSET', KEYS[1], 'last_stale_attempt', a.attempt, 'last_stale_at', a.now)
    xadd_trimmed(KEYS[2], a.maxlen, unpack(a.evt))
    return 2
  end
end
if not listed(a.from, redis.call('HGET', KEYS[1], 'state') or '') then
  return 0
end
redis.call('HSET', KEYS[1], 'state', a.to, 'finished_at', a.now, 'updated_at', a.now, unpack(a.job))
if a.to == a.complete then
  config_trained(KEYS[4], tonumber(redis.call('HGET', KEYS[1], 'covered_samples') or '0'), a.cfg)
  if a.model ~= '' then
    redis.call('LPUSH', KEYS[7], a.model)
    redis.call('LTRIM', KEYS[7], 0, tonumber(a.models_kept) - 1)
  end
else
  config_set(KEYS[4], a.cfg)
end
xadd_trimmed(KEYS[2], a.maxlen, unpack(a.evt))
if a.retry_at ~= '' then
  redis.call('ZADD', KEYS[6], a.retry_at, a.job_id)  -- retrying: the config stays taken by this job
else
  release_active()
  if redis.call('HEXISTS', KEYS[3], a.config_key) == 0 then
    config_job_gone(KEYS[4], a.now)
  end
end
return 1
