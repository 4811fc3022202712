-- Give back a config lease and its node slot, only if the caller owns them.
-- KEYS[1] config lease (string "token|...")   KEYS[2] node slot zset
-- ARGV[1] owner token
-- Returns 1 when released, 0 when the lease was not the caller's (expired, taken over).
redis.call('ZREM', KEYS[2], ARGV[1])
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
