-- Record a running job's end (complete or failed), free its config and announce it, atomically.
-- On success the new samples the job covered are taken off the config's count.
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] active-job hash   KEYS[4] config hash
-- ARGV[1] stream max length   ARGV[2] job id   ARGV[3] config key   ARGV[4] final state
-- ARGV[5] n_job: field/value pairs for the job hash      (ARGV[8] .. )
-- ARGV[6] n_cfg: field/value pairs for the config hash   (after the job's)
-- ARGV[7] n_evt: field/value pairs of the event, `type` included (after the config's)
-- Returns 1 when recorded, 0 when the job was not running (someone else ended it).
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then
  return 0
end
local n_job, n_cfg, n_evt = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local i = 8
local job = {'state', ARGV[4]}
for _ = 1, 2 * n_job do job[#job + 1] = ARGV[i]; i = i + 1 end
redis.call('HSET', KEYS[1], unpack(job))
if ARGV[4] == 'complete' then
  local covered = tonumber(redis.call('HGET', KEYS[1], 'covered_samples') or '0')
  local left = tonumber(redis.call('HGET', KEYS[4], 'new_samples') or '0') - covered
  redis.call('HSET', KEYS[4], 'new_samples', math.max(left, 0))
end
if n_cfg > 0 then
  local cfg = {}
  for _ = 1, 2 * n_cfg do cfg[#cfg + 1] = ARGV[i]; i = i + 1 end
  redis.call('HSET', KEYS[4], unpack(cfg))
end
local evt = {}
for _ = 1, 2 * n_evt do evt[#evt + 1] = ARGV[i]; i = i + 1 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(evt))
if redis.call('HGET', KEYS[3], ARGV[3]) == ARGV[2] then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
return 1
