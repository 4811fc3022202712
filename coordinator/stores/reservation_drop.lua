-- The reserved job started: its reservation of node ARGV[1] goes (only if still its own).
-- KEYS[1] reservations hash   ARGV[1] node   ARGV[2] job id   Returns 1 when dropped.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw and cjson.decode(raw).job_id == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
