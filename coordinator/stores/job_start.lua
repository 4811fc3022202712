-- An attempt holding the leases takes a job: queued -> leased, announced, atomically.
-- KEYS[1] job hash            KEYS[2] event stream     KEYS[3] the job's config hash
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] now (unix s)     ARGV[3] job id
-- ARGV[4] node                ARGV[5] worker name      ARGV[6] fencing token ('' without a lease)
-- ARGV[7] allowed "from" states, comma-separated       ARGV[8] epoch it resumes from (0: fresh)
-- ARGV[9] the model it starts from (warm start; '' : none), the job's `parent_model`
-- Returns {1, attempt} when taken, {0, current state} when the job may not start.
local state = redis.call('HGET', KEYS[1], 'state') or ''
if not listed(ARGV[7], state) then
  return {0, state}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- The new samples this run trains on: taken off the config's count when it succeeds.
local covered = redis.call('HGET', KEYS[3], 'new_samples') or '0'
redis.call('HDEL', KEYS[3], 'waiting_since')  -- it has a GPU: its wait is over
redis.call('HSET', KEYS[1], 'state', 'leased', 'node', ARGV[4], 'worker', ARGV[5],
  'started_at', ARGV[2], 'updated_at', ARGV[2], 'covered_samples', covered, 'fence', ARGV[6],
  'resumed_epoch', ARGV[8], 'parent_model', ARGV[9])
local config_key = redis.call('HGET', KEYS[1], 'config_key')
local job = redis.call('HMGET', KEYS[1], 'epochs', 'board_type', 'num_players')
local source = redis.call('HGET', KEYS[1], 'source_event') or ''  -- the export behind it (latency)
xadd_trimmed(KEYS[2], ARGV[1], 'type', 'TRAINING_STARTED',
  'job_id', ARGV[3], 'config_key', config_key, 'board_type', job[2] or '', 'num_players', job[3] or '',
  'node', ARGV[4], 'worker', ARGV[5], 'attempt', attempt, 'total_epochs', job[1] or '', 'fence', ARGV[6],
  'resumed_epoch', ARGV[8], 'init_weights', ARGV[9], 'source_event', source)
return {1, attempt}
