-- Move RQ jobs to the head of RQ's queue, in the order given (the first ends first), as RQ's own
-- `enqueue(at_front=True)` places a job; a job no longer in the queue (a worker took it) is skipped.
-- KEYS[1] RQ's queue list (rq:queue:<name>)
-- ARGV[1] JSON list of RQ job ids
-- Returns how many were moved.
local ids = cjson.decode(ARGV[1])
local moved = 0
for i = #ids, 1, -1 do
  if redis.call('LREM', KEYS[1], 1, ids[i]) > 0 then
    redis.call('LPUSH', KEYS[1], ids[i])
    moved = moved + 1
  end
end
return moved
