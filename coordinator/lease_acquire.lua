-- Take a config's training lease and one GPU slot of a node together, or neither.
-- KEYS[1] config lease hash   KEYS[2] config fencing counter
-- KEYS[3] node slot zset (member: owner token, score: expiry in ms)   KEYS[4] node hash (status, gpus)
-- ARGV[1] owner token   ARGV[2] ttl ms   ARGV[3] default slot count (node hash has no gpus)
-- ARGV[4] node   ARGV[5] worker   ARGV[6] job id
-- Returns {1, fencing token} | {0, 'config', holder job} | {0, 'slots', used .. '/' .. total}
--       | {0, 'node_down', status}
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local status = redis.call('HGET', KEYS[4], 'status')
if status == 'down' then
  return {0, 'node_down', status}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 'config', redis.call('HGET', KEYS[1], 'job_id') or ''}
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
local total = tonumber(redis.call('HGET', KEYS[4], 'gpus') or ARGV[3])
local used = redis.call('ZCARD', KEYS[3])
if used >= total then
  return {0, 'slots', used .. '/' .. total}
end
local ttl = tonumber(ARGV[2])
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', fence, 'node', ARGV[4], 'worker', ARGV[5],
  'job_id', ARGV[6], 'acquired_ms', now_ms, 'ttl_ms', ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[3], now_ms + ttl, ARGV[1])
return {1, fence}
