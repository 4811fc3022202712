-- An attempt holding the leases takes a job: queued -> leased, announced, atomically.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] the job's config hash
-- ARGV[1] JSON: now (clock, s), job_id, node, worker, fence ('' without a lease), from (allowed
--   states), to (the leased state), resumed_epoch (0: fresh), init_weights (the model it starts
--   from, '' : none; the job's `parent_model`), event (TRAINING_STARTED), maxlen (stream, '0': not trimmed)
-- The event also carries the record's `warm_start_dropped` (why an earlier attempt's init weights
-- could not be loaded: this one starts from scratch), when it has one.
-- Returns {1, attempt} when taken, {0, current state} when the job may not start.
local a = args()
local state = redis.call('HGET', KEYS[1], 'state') or ''
if not listed(a.from, state) then
  return {0, state}
end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- The new samples this run trains on: taken off the config's count when it succeeds.
local covered = config_new_samples(KEYS[3])
config_wait_over(KEYS[3])
redis.call('HSET', KEYS[1], 'state', a.to, 'node', a.node, 'worker', a.worker,
  'started_at', a.now, 'updated_at', a.now, 'covered_samples', covered, 'fence', a.fence,
  'resumed_epoch', a.resumed_epoch, 'parent_model', a.init_weights)
local job = redis.call('HMGET', KEYS[1], 'config_key', 'epochs', 'board_type', 'num_players', 'source_event',
  'warm_start_dropped')
local event = {'type', a.event,
  'job_id', a.job_id, 'config_key', job[1] or '', 'board_type', job[3] or '', 'num_players', job[4] or '',
  'node', a.node, 'worker', a.worker, 'attempt', attempt, 'total_epochs', job[2] or '', 'fence', a.fence,
  'resumed_epoch', a.resumed_epoch, 'init_weights', a.init_weights, 'source_event', job[5] or ''}
if job[6] then
  event[#event + 1] = 'warm_start_dropped'
  event[#event + 1] = job[6]
end
xadd_trimmed(KEYS[2], a.maxlen, unpack(event))
return {1, attempt}
