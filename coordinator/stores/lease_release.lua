-- Give back a config lease and all its node slots (each GPU of a multi-GPU lease) at once, only
-- if the caller owns them.
-- KEYS[1] config lease (string "token|fence|node|worker|job_id")   KEYS[2] node slot zset
-- KEYS[3] lease expiry zset (member: job id): the job's entry goes with the lease
-- KEYS[4] node device hash (device index -> owner token; optional): the caller's devices go
-- ARGV[1] owner token   ARGV[2] the lease's GPU count (absent: 1)   ARGV[3..] its device indices
-- Returns 1 when released, 0 when the lease was not the caller's (expired, taken over).
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 2, tonumber(ARGV[2] or '1') do
  redis.call('ZREM', KEYS[2], ARGV[1] .. '+' .. i)
end
if KEYS[4] then
  for i = 3, #ARGV do
    if redis.call('HGET', KEYS[4], ARGV[i]) == ARGV[1] then
      redis.call('HDEL', KEYS[4], ARGV[i])
    end
  end
end
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
