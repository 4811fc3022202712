-- Prepended by coordinator/core/lua.py to every script: the config store's writes
-- (coordinator/stores/configs.py) that a job script makes atomically with a job's change of state.
-- A script writes a config hash only through these.
-- config_wait_over(config): it has a GPU (its job started): its wait is over.
local function config_wait_over(config)
  redis.call('HDEL', config, 'waiting_since')
end
-- config_new_samples(config): the new samples recorded and not yet trained on.
local function config_new_samples(config)
  return tonumber(redis.call('HGET', config, 'new_samples') or '0')
end
-- config_trained(config, covered, fields): a training succeeded on `covered` of its new samples;
-- `fields` (flat field/value list) are the completed training's (last_trained_at, latest_model, ...).
local function config_trained(config, covered, fields)
  redis.call('HSET', config, 'new_samples', math.max(config_new_samples(config) - covered, 0))
  if #fields > 0 then redis.call('HSET', config, unpack(fields)) end
end
-- config_set(config, fields): other outcomes' fields (last_failed_at, ...), flat field/value list.
local function config_set(config, fields)
  if #fields > 0 then redis.call('HSET', config, unpack(fields)) end
end
-- config_job_gone(config, now): the config has no job now: with new samples left it waits for a
-- GPU from `now` (the wait bound), else it has nothing to wait for until its next export.
local function config_job_gone(config, now)
  if config_new_samples(config) > 0 then
    redis.call('HSET', config, 'waiting_since', now)
  else
    redis.call('HDEL', config, 'waiting_since')
  end
end
-- config_preempted(config, job_id, now): its job yielded its GPU: it waits again from `now`, and
-- dispatch resumes `job_id` when it is picked.
local function config_preempted(config, job_id, now)
  redis.call('HSET', config, 'waiting_since', now, 'preempted_job', job_id)
end
-- config_cancelled(config, now): an operator cancelled its job: it waits for a newer export.
local function config_cancelled(config, now)
  redis.call('HSET', config, 'cancelled_at', now)
end
