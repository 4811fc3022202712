-- Take a config's training lease and one GPU slot of a node together, or neither.
-- KEYS[1] config lease (string "token|fence|node|worker|job_id", PX = TTL)
-- KEYS[2] config fencing counter
-- KEYS[3] node slot zset (member: owner token, score: expiry in ms)   KEYS[4] node hash (status, gpus)
-- KEYS[5] lease expiry zset (member: job id, score: the lease's expiry in ms; what the reaper reads)
-- ARGV[1] owner token   ARGV[2] ttl ms   ARGV[3] default slot count (node hash has no gpus)
-- ARGV[4] node   ARGV[5] worker   ARGV[6] job id
-- Returns {1, fencing token} | {0, 'config', holder} | {0, 'slots', used .. '/' .. total}
--       | {0, 'node_down', 'down'}
local node = redis.call('HMGET', KEYS[4], 'status', 'gpus')
if node[1] == 'down' then
  return {0, 'node_down', 'down'}
end
local holder = redis.call('GET', KEYS[1])
if holder then
  return {0, 'config', holder}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local total = tonumber(node[2] or ARGV[3])
local used = redis.call('ZCARD', KEYS[3])
if used >= total then
  -- Full: drop slots whose holders stopped renewing, then count again.
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  used = redis.call('ZCARD', KEYS[3])
  if used >= total then
    return {0, 'slots', used .. '/' .. total}
  end
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[6],
  'PX', ARGV[2])
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[5], now_ms + tonumber(ARGV[2]), ARGV[6])
return {1, fence}
