-- Record the end of a job attempt (complete, failed, retrying or cancelled), free its config
-- (unless it will retry) and announce it, atomically.
-- Fencing: a success whose fencing token is no longer the config's newest (or no longer the job's)
-- publishes nothing; it is recorded as stale and TRAINING_FAILED with reason `fenced` is emitted.
-- A failure of an attempt that is no longer the job's is announced but leaves the job alone.
-- On success the new samples the job covered are taken off the config's count.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] config hash
-- KEYS[5] the config's fencing counter   KEYS[6] delayed-job zset (retries wait there)
-- KEYS[7] the config's published models (list, newest first)
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] job id   ARGV[3] config key   ARGV[4] final state
-- ARGV[5] this attempt's fencing token ('' when run without a lease)   ARGV[6] node   ARGV[7] attempt
-- ARGV[8] n_job: field/value pairs for the job hash      (from ARGV[15])
-- ARGV[9] n_cfg: field/value pairs for the config hash   (after the job's)
-- ARGV[10] n_evt: field/value pairs of the event, `type` included (after the config's)
-- ARGV[11] allowed "from" states, comma-separated   ARGV[12] unix time of the retry ('' : none)
-- ARGV[13] the model a completed attempt publishes ('' : none)   ARGV[14] models kept on KEYS[7]
-- An end that leaves the config without a job starts its wait (`waiting_since`) when new samples
-- are left, else clears it.
-- Returns 1 when recorded, 2 when fenced or stale, 0 when the job was not running (ended elsewhere).
local function release_active()
  if redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[2] then
    redis.call('HDEL', KEYS[3], ARGV[3])
  end
end

local now_s = time_s()
local job, next_i = pairs_from(15, tonumber(ARGV[8]))
local cfg, evt_i = pairs_from(next_i, tonumber(ARGV[9]))
local evt = pairs_from(evt_i, tonumber(ARGV[10]))
local mine = ARGV[5]
local current = redis.call('HGET', KEYS[1], 'fence') or ''
if mine ~= '' then
  local newest = redis.call('GET', KEYS[5]) or ''
  if ARGV[4] == 'complete' and (newest ~= mine or current ~= mine) then
    -- A result from an attempt that is no longer the newest holder: never published.
    local error = 'fenced: fencing token ' .. mine .. ' is not the newest (' .. newest .. '); result not published'
    local st = redis.call('HGET', KEYS[1], 'state')
    if current == mine and (st == 'running' or st == 'leased') then
      redis.call('HSET', KEYS[1], 'state', 'stale', 'error', error, 'reason', 'fenced',
        'finished_at', now_s, 'updated_at', now_s)
      release_active()
    end
    redis.call('HSET', KEYS[1], 'last_stale_attempt', ARGV[7], 'last_stale_at', now_s)
    local config = redis.call('HMGET', KEYS[1], 'board_type', 'num_players')
    xadd_trimmed(KEYS[2], ARGV[1], 'type', 'TRAINING_FAILED',
      'job_id', ARGV[2], 'config_key', ARGV[3], 'board_type', config[1] or '', 'num_players', config[2] or '',
      'reason', 'fenced', 'error', error, 'attempt', ARGV[7], 'node', ARGV[6], 'fence', mine)
    return 2
  end
  if current ~= mine then
    -- A failure of an older attempt: reported, but the job belongs to a newer attempt now.
    redis.call('HSET', KEYS[1], 'last_stale_attempt', ARGV[7], 'last_stale_at', now_s)
    xadd_trimmed(KEYS[2], ARGV[1], unpack(evt))
    return 2
  end
end
local state = redis.call('HGET', KEYS[1], 'state') or ''
if not listed(ARGV[11], state) then
  return 0
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_at', now_s, 'updated_at', now_s, unpack(job))
if ARGV[4] == 'complete' then
  local covered = tonumber(redis.call('HGET', KEYS[1], 'covered_samples') or '0')
  local left = tonumber(redis.call('HGET', KEYS[4], 'new_samples') or '0') - covered
  redis.call('HSET', KEYS[4], 'new_samples', math.max(left, 0))
  if ARGV[13] ~= '' then
    redis.call('LPUSH', KEYS[7], ARGV[13])
    redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[14]) - 1)
  end
end
if #cfg > 0 then
  redis.call('HSET', KEYS[4], unpack(cfg))
end
xadd_trimmed(KEYS[2], ARGV[1], unpack(evt))
if ARGV[12] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[12], ARGV[2])  -- retrying: the config stays taken by this job
else
  release_active()
  -- The config has no job now: with new samples left it waits for a GPU from now (the wait bound).
  if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then
    if tonumber(redis.call('HGET', KEYS[4], 'new_samples') or '0') > 0 then
      redis.call('HSET', KEYS[4], 'waiting_since', now_s)
    else
      redis.call('HDEL', KEYS[4], 'waiting_since')  -- nothing to wait for until the next export
    end
  end
end
return 1
