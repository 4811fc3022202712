-- Take a config's training lease and `gpus` GPU slots of ONE node together, or nothing at all
-- (a multi-GPU training never holds part of what it needs: no two of them can deadlock).
-- KEYS[1] config lease (string "token|fence|node|worker|job_id", PX = TTL)
-- KEYS[2] config fencing counter
-- KEYS[3] node slot zset (member: owner token for the lease's first GPU, token .. '+' .. i for
--         its i-th (i >= 2); score: expiry in ms)   KEYS[4] node hash (status, gpus)
-- KEYS[5] lease expiry zset (member: job id, score: the lease's expiry in ms; what the reaper reads)
-- KEYS[6] node device hash (device index -> owner token; a device is held while its token's
--         member of KEYS[3] is unexpired)
-- ARGV[1] owner token   ARGV[2] ttl ms   ARGV[3] default slot count (node hash has no gpus)
-- ARGV[4] node   ARGV[5] worker   ARGV[6] job id   ARGV[7] GPUs wanted (1 or more)
-- ARGV[8] '1': any device 0 .. slot count - 1 may be taken after the listed ones (every GPU of the
--         node fits the job); '0': only the listed ones
-- ARGV[9..] the device indices it may take, best first (the worker's own, then the node's others
--           that fit)
-- Returns {1, fencing token, device, ...} | {0, 'config', holder} | {0, 'slots', used .. '/' .. total}
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
local wanted = tonumber(ARGV[7] or '1')
-- Slots whose holders stopped renewing are free (every GPU of a lease expires at once).
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
local used = redis.call('ZCARD', KEYS[3])
if used + wanted > total then
  local detail = used .. '/' .. total
  if wanted > 1 then
    detail = detail .. ', needs ' .. wanted
  end
  return {0, 'slots', detail}
end
local pool = {}
for i = 9, #ARGV do
  pool[#pool + 1] = ARGV[i]
end
if ARGV[8] ~= '0' or #pool == 0 then
  for d = 0, total - 1 do
    pool[#pool + 1] = tostring(d)
  end
end
local chosen, seen = {}, {}
for _, device in ipairs(pool) do
  if #chosen == wanted then
    break
  end
  if not seen[device] then
    seen[device] = true
    local owner = redis.call('HGET', KEYS[6], device)
    if not owner or not redis.call('ZSCORE', KEYS[3], owner) then
      chosen[#chosen + 1] = device
    end
  end
end
if #chosen < wanted then
  return {0, 'slots', used .. '/' .. total .. ', ' .. #chosen .. ' of ' .. wanted .. ' fitting devices free'}
end
local fence = redis.call('INCR', KEYS[2])
local expiry = now_ms + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence .. '|' .. ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[6],
  'PX', ARGV[2])
local reply = {1, fence}
for i, device in ipairs(chosen) do
  redis.call('ZADD', KEYS[3], expiry, i == 1 and ARGV[1] or (ARGV[1] .. '+' .. i))
  redis.call('HSET', KEYS[6], device, ARGV[1])
  reply[#reply + 1] = tonumber(device)
end
redis.call('ZADD', KEYS[5], expiry, ARGV[6])
return reply
