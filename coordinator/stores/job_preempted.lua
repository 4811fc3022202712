-- An attempt that yielded its GPU ends: running -> preempted, not a failure (no retry or breaker
-- count). The attempt's GPU-hours are added to the job's `yielded_gpu_hours` (what its completion adds to
-- the config's training GPU-hours). The config waits again from now (`waiting_since`) with this job as
-- its `preempted_job` (its active-job entry stays: the job resumes when the config is picked again).
-- Two kinds: asked by the scheduler (kind '' here: the request's own, wait or value, counted in
-- `preemptions`, the per-job cap's count), or `notice_kind` (its ephemeral host announced its
-- termination: counted in `notice_yields` only, never against the cap; the config's fencing counter
-- is advanced, so nothing the noticed attempt still does can publish).
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the job's config hash   KEYS[4] the config's fence
-- ARGV[1] JSON: now, maxlen, job_id, config_key, fence (this attempt's; '' without a lease), node,
--   attempt, epoch (reached), lost_hours (GPU-hours since its newest checkpoint: what the
--   preemption cost), from (allowed states), to (the preempted state), board_type, num_players,
--   event (TRAINING_PREEMPTED), kind ('' or notice_kind), notice_kind (node_notice)
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
local notice = a.kind == a.notice_kind
local count, yields, kind, preempted_for, requested_at
if notice then
  count = tonumber(redis.call('HGET', KEYS[1], 'preemptions') or '0')
  yields = redis.call('HINCRBY', KEYS[1], 'notice_yields', 1)
  redis.call('INCR', KEYS[4])
  kind, preempted_for, requested_at = a.kind, '', a.now
else
  count = redis.call('HINCRBY', KEYS[1], 'preemptions', 1)
  yields = tonumber(redis.call('HGET', KEYS[1], 'notice_yields') or '0')
  kind, preempted_for, requested_at = req[2] or '', req[1] or '', req[3] or ''
end
local lost = redis.call('HINCRBYFLOAT', KEYS[1], 'preempted_gpu_hours', a.lost_hours)
local started = tonumber(redis.call('HGET', KEYS[1], 'started_at') or '') or tonumber(a.now)
local gpus = tonumber(redis.call('HGET', KEYS[1], 'gpus_held') or '1') or 1  -- a multi-GPU attempt's N
redis.call('HINCRBYFLOAT', KEYS[1], 'yielded_gpu_hours', math.max(0, tonumber(a.now) - started) / 3600 * gpus)
redis.call('HSET', KEYS[1], 'state', a.to, 'preempted_at', a.now, 'updated_at', a.now, 'epoch_reached', a.epoch,
  'last_yield_kind', kind)
redis.call('HDEL', KEYS[1], 'preempt_requested_at', 'preempt_fence')
config_preempted(KEYS[3], a.job_id, a.now)
xadd_trimmed(KEYS[2], a.maxlen, 'type', a.event,
  'job_id', a.job_id, 'config_key', a.config_key, 'board_type', a.board_type, 'num_players', a.num_players,
  'epoch', a.epoch, 'preempted_for', preempted_for, 'kind', kind, 'requested_at', requested_at,
  'attempt', a.attempt, 'node', a.node, 'fence', a.fence, 'lost_gpu_hours', a.lost_hours,
  'preemptions', count, 'notice_yields', yields, 'preempted_gpu_hours', lost)
return 1
