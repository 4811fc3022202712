-- May job ARGV[2] start on node ARGV[1], given the node's reservation (`scheduling/reservations.py`)?
-- KEYS[1] reservations hash (node -> JSON: job_id, promised_at, spare, mode)
-- ARGV[1] node   ARGV[2] job id   ARGV[3] unix time the job is expected to end ('' unknown)
-- ARGV[4] the GPUs it takes (a multi-GPU job needs that many spare ones)
-- Returns '' when it may (no reservation; the reserved job; with mode backfill, one that ends by
-- promised_at; else as many of the `spare` GPUs as it takes, taken here), else the reservation's JSON.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return ''
end
local r = cjson.decode(raw)
if r.job_id == ARGV[2] then
  return ''
end
local ends_at = tonumber(ARGV[3])
if r.mode == 'backfill' and ends_at and ends_at <= r.promised_at then
  return ''
end
local gpus = tonumber(ARGV[4] or '1')
if r.spare >= gpus then
  r.spare = r.spare - gpus
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(r))
  return ''
end
return raw
