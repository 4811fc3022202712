-- An ephemeral host's notice ends its life: count it in the observed lifetimes, once per life.
-- KEYS[1] the node's GPU inventory hash (`up_since`: unix s its first worker of this life registered)
-- KEYS[2] the lifetimes hash (mean_h, count, last_h)
-- ARGV[1] now (unix s)   ARGV[2] weight of the newest lifetime in the mean (0..1]
-- Returns the lifetime in hours, or false when this life was counted already (no up_since).
local up = tonumber(redis.call('HGET', KEYS[1], 'up_since'))
if not up then
  return false
end
redis.call('HDEL', KEYS[1], 'up_since')
local hours = math.max(tonumber(ARGV[1]) - up, 0) / 3600
local count = tonumber(redis.call('HGET', KEYS[2], 'count') or '0')
local mean = tonumber(redis.call('HGET', KEYS[2], 'mean_h') or '0')
local alpha = tonumber(ARGV[2])
if count == 0 then
  mean = hours
else
  mean = alpha * hours + (1 - alpha) * mean
end
redis.call('HSET', KEYS[2], 'mean_h', string.format('%.4f', mean), 'count', count + 1,
           'last_h', string.format('%.4f', hours))
return string.format('%.4f', hours)
