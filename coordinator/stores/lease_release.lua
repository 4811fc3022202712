-- Give back a config lease and its node slot, only if the caller owns them.
-- KEYS[1] config lease (string "token|fence|node|worker|job_id")   KEYS[2] node slot zset
-- KEYS[3] lease expiry zset (member: job id): the job's entry goes with the lease
-- ARGV[1] owner token
-- Returns 1 when released, 0 when the lease was not the caller's (expired, taken over).
redis.call('ZREM', KEYS[2], ARGV[1])
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return 0
end
local job_id = string.match(value, '^[^|]*|[^|]*|[^|]*|[^|]*|(.*)$')
if job_id then
  redis.call('ZREM', KEYS[3], job_id)
end
redis.call('DEL', KEYS[1])
return 1
