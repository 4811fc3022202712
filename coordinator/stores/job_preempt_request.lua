-- Ask a running attempt to yield its GPU at a checkpoint (`coordinator.scheduling.preempter`): marks the job
-- record, which the worker's lease renewal reads (its reply's stop reason becomes 'preempted').
-- KEYS[1] job hash
-- ARGV[1] now (unix s)   ARGV[2] the attempt's fencing token (the one decided on)
-- ARGV[3] state the job must be in ('running')   ARGV[4] the config it yields to
-- ARGV[5] kind ('wait' | 'value')   ARGV[6] why (for priorities and status)
-- Returns 1 when requested; 0 when the job is not in that state, another attempt holds it (fence
-- differs) or a request is already pending (one preemption in flight per slot).
local state, fence, pending = unpack(redis.call('HMGET', KEYS[1], 'state', 'fence', 'preempt_requested_at'))
if state ~= ARGV[3] or (fence or '') ~= ARGV[2] or (pending and pending ~= '') then
  return 0
end
redis.call('HSET', KEYS[1], 'preempt_requested_at', ARGV[1], 'preempt_for', ARGV[4],
  'preempt_kind', ARGV[5], 'preempt_why', ARGV[6], 'preempt_fence', ARGV[2])
return 1
