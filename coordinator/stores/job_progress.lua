-- One epoch of a running attempt, in one command: its figures on the job record, TRAINING_PROGRESS
-- on the stream and, when given, RQ's job meta (what `rq info` and rq-dashboard show).
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] RQ's job hash (optional)
-- ARGV[1] stream max length (0: not trimmed)   ARGV[2] n_job: field/value pairs for the job hash
-- ARGV[3] n_evt: field/value pairs of the event, `type` included   then the pairs (job's, event's)
-- then, with KEYS[3], RQ's serialized meta
-- Returns the event's stream id.
local job, evt_i = pairs_from(4, tonumber(ARGV[2]))
local evt, meta_i = pairs_from(evt_i, tonumber(ARGV[3]))
if #job > 0 then
  redis.call('HSET', KEYS[1], unpack(job))
end
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'meta', ARGV[meta_i])
end
return xadd_trimmed(KEYS[2], ARGV[1], unpack(evt))
