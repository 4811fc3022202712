-- The reserved job started (on whichever node): its reservation goes.
-- KEYS[1] reservations hash (node -> JSON with job_id; a handful of nodes)   ARGV[1] job id
-- Returns how many were dropped.
local entries = redis.call('HGETALL', KEYS[1])
local dropped = 0
for i = 1, #entries, 2 do
  if cjson.decode(entries[i + 1]).job_id == ARGV[1] then
    dropped = dropped + redis.call('HDEL', KEYS[1], entries[i])
  end
end
return dropped
