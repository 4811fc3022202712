-- Record one result on a circuit breaker; open or close it, with its event, atomically.
-- KEYS[1] breaker hash (state, failures, first_failure_at, opened_at)   KEYS[2] event stream
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] '1' success / '0' failure   ARGV[3] now (unix s)
-- ARGV[4] failures that open it   ARGV[5] window s   ARGV[6] kind (config|node)   ARGV[7] name
-- ARGV[8] cooldown s
-- Returns the state after: 'closed' | 'open'.
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local now = tonumber(ARGV[3])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'last_success_at', ARGV[3])
  if state ~= 'closed' then
    xadd_trimmed(KEYS[2], ARGV[1], 'type', 'CIRCUIT_CLOSED',
      'kind', ARGV[6], 'name', ARGV[7])
  end
  return 'closed'
end
if state == 'open' then
  -- A failed trial (half-open) opens it again for another cooldown.
  redis.call('HSET', KEYS[1], 'opened_at', ARGV[3], 'last_failure_at', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'failures', 1)
  return 'open'
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first_failure_at') or '0')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if failures == 0 or now - first > tonumber(ARGV[5]) then
  failures = 0
  redis.call('HSET', KEYS[1], 'first_failure_at', ARGV[3])
end
failures = failures + 1
redis.call('HSET', KEYS[1], 'failures', failures, 'last_failure_at', ARGV[3])
if failures >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[3])
  xadd_trimmed(KEYS[2], ARGV[1], 'type', 'CIRCUIT_OPENED',
    'kind', ARGV[6], 'name', ARGV[7], 'failures', failures, 'cooldown_s', ARGV[8])
  return 'open'
end
redis.call('HSET', KEYS[1], 'state', 'closed')
return 'closed'
