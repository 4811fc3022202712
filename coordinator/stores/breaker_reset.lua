-- Close a circuit breaker by hand (`ringrift-train breakers --reset`), with its event, atomically.
-- KEYS[1] breaker hash (state, failures, first_failure_at, opened_at)   KEYS[2] event stream
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] now (unix s)   ARGV[3] kind (config|node)
-- ARGV[4] name
-- Returns the state before: 'closed' (nothing to do, nothing written, also for no breaker at all)
-- or 'open' (now closed, its failures forgotten, CIRCUIT_CLOSED with reason 'reset').
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then
  return 'closed'
end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'reset_at', ARGV[2])
xadd_trimmed(KEYS[2], ARGV[1], 'type', 'CIRCUIT_CLOSED', 'kind', ARGV[3], 'name', ARGV[4], 'reason', 'reset')
return state
