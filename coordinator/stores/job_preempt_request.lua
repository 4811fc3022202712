-- Ask a running attempt to yield its GPU at a checkpoint (`coordinator.scheduling.preempter`): marks the
-- job record, which the worker's lease renewal reads (its reply's stop reason becomes 'preempted').
-- KEYS[1] job hash
-- ARGV[1] JSON: now, fence (the attempt's, the one decided on), state (the state it must be in:
--   running), for_config (the config it yields to), kind ('wait' | 'value'), why (for priorities and status)
-- Returns 1 when requested; 0 when the job is not in that state, another attempt holds it (fence
-- differs) or a request is already pending (one preemption in flight per slot).
local a = args()
local state, fence, pending = unpack(redis.call('HMGET', KEYS[1], 'state', 'fence', 'preempt_requested_at'))
if state ~= a.state or (fence or '') ~= a.fence or (pending and pending ~= '') then
  return 0
end
redis.call('HSET', KEYS[1], 'preempt_requested_at', a.now, 'preempt_for', a.for_config,
  'preempt_kind', a.kind, 'preempt_why', a.why, 'preempt_fence', a.fence)
return 1
