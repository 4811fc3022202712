-- An attempt that yielded its GPU on request ends: running -> preempted, not a failure (no retry or
-- breaker count). The attempt's hours are added to the job's `yielded_gpu_hours` (what its completion
-- adds to the config's training GPU-hours). The config waits again from now (`waiting_since`) with this
-- job as its `preempted_job` (its active-job entry stays: the job resumes when the config is picked again).
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the job's config hash
-- ARGV[1] JSON: now, maxlen, job_id, config_key, fence (this attempt's; '' without a lease), node,
--   attempt, epoch (reached), lost_hours (GPU-hours since its newest checkpoint: what the
--   preemption cost), from (allowed states), to (the preempted state), board_type, num_players,
--   event (TRAINING_PREEMPTED)
-- Returns 1 when recorded; 2 when another attempt holds the job (fence differs): nothing changed;
-- 0 when the job is not in an allowed state (ended elsewhere).
local a = args()
if a.fence ~= '' and (redis.call('HGET', KEYS[1], 'fence') or '') ~= a.fence then
  return 2
end
if not listed(a.from, redis.call('HGET', KEYS[1], 'state') or '') then
  return 0
end
local req = redis.call('HMGET', KEYS[1], 'preempt_for', 'preempt_kind', 'preempt_requested_at')
local count = redis.call('HINCRBY', KEYS[1], 'preemptions', 1)
local lost = redis.call('HINCRBYFLOAT', KEYS[1], 'preempted_gpu_hours', a.lost_hours)
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '') or tonumber(a.now)
redis.call('HINCRBYFLOAT', KEYS[1], 'yielded_gpu_hours', math.max(0, tonumber(a.now) - started) / 3600)
redis.call('HSET', KEYS[1], 'state', a.to, 'preempted_at', a.now, 'updated_at', a.now, 'epoch_reached', a.epoch)
redis.call('HDEL', KEYS[1], 'preempt_requested_at', 'preempt_fence')
config_preempted(KEYS[3], a.job_id, a.now)
xadd_trimmed(KEYS[2], a.maxlen, 'type', a.event,
  'job_id', a.job_id, 'config_key', a.config_key, 'board_type', a.board_type, 'num_players', a.num_players,
  'epoch', a.epoch, 'preempted_for', req[1] or '', 'kind', req[2] or '', 'requested_at', req[3] or '',
  'attempt', a.attempt, 'node', a.node, 'fence', a.fence, 'lost_gpu_hours', a.lost_hours,
  'preemptions', count, 'preempted_gpu_hours', lost)
return 1
