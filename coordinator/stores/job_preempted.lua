-- An attempt that yielded its GPU on request ends: running -> preempted, not a failure (no retry or
-- breaker count). The attempt's hours are added to the job's `yielded_gpu_hours` (what its completion
-- adds to the config's training GPU-hours). The config waits again from now (`waiting_since`) with this job as its
-- `preempted_job` (its active-job entry stays: the job resumes when the config is picked again).
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the job's config hash
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] job id   ARGV[3] config key   ARGV[4] this attempt's fencing
-- token ('' when run without a lease)   ARGV[5] node   ARGV[6] attempt   ARGV[7] epoch reached
-- ARGV[8] GPU-hours since its newest checkpoint (the work the preemption cost)
-- ARGV[9] allowed "from" states, comma-separated   ARGV[10] board type   ARGV[11] players
-- Returns 1 when recorded; 2 when another attempt holds the job (fence differs): nothing changed;
-- 0 when the job is not in an allowed state (ended elsewhere).
local now_s = time_s()
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[1], 'fence') or '') ~= ARGV[4] then
  return 2
end
local state = redis.call('HGET', KEYS[1], 'state') or ''
if not listed(ARGV[9], state) then
  return 0
end
local req = redis.call('HMGET', KEYS[1], 'preempt_for', 'preempt_kind', 'preempt_requested_at')
local count = redis.call('HINCRBY', KEYS[1], 'preemptions', 1)
local lost = redis.call('HINCRBYFLOAT', KEYS[1], 'preempted_gpu_hours', ARGV[8])
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '') or tonumber(now_s)
redis.call('HINCRBYFLOAT', KEYS[1], 'yielded_gpu_hours', math.max(0, tonumber(now_s) - started) / 3600)
redis.call('HSET', KEYS[1], 'state', 'preempted', 'preempted_at', now_s, 'updated_at', now_s,
  'epoch_reached', ARGV[7])
redis.call('HDEL', KEYS[1], 'preempt_requested_at', 'preempt_fence')
redis.call('HSET', KEYS[3], 'waiting_since', now_s, 'preempted_job', ARGV[2])
xadd_trimmed(KEYS[2], ARGV[1], 'type', 'TRAINING_PREEMPTED',
  'job_id', ARGV[2], 'config_key', ARGV[3], 'board_type', ARGV[10], 'num_players', ARGV[11],
  'epoch', ARGV[7], 'preempted_for', req[1] or '', 'kind', req[2] or '', 'requested_at', req[3] or '',
  'attempt', ARGV[6], 'node', ARGV[5], 'fence', ARGV[4], 'lost_gpu_hours', ARGV[8],
  'preemptions', count, 'preempted_gpu_hours', lost)
return 1
