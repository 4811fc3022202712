-- Extend a held config lease and its node slot, only if the caller still owns them.
-- KEYS[1] config lease (string "token|...")   KEYS[2] node slot zset
-- ARGV[1] owner token   ARGV[2] ttl ms
-- Returns 1 when extended, 0 when the caller no longer holds the lease.
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return 0
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[1])
return 1
