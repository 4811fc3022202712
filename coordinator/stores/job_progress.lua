-- One epoch of a running attempt, in one command: its figures on the job record, TRAINING_PROGRESS
-- on the stream and, when given, RQ's job meta (what `rq info` and rq-dashboard show).
-- KEYS[1] job hash   KEYS[2] event stream   KEYS[3] RQ's job hash (optional)
-- ARGV[1] JSON: maxlen, job / evt (flat field-value lists: the record's figures; the event with its `type`)
-- ARGV[2] with KEYS[3]: RQ's serialized meta (bytes, hence not in the JSON)
-- Returns the event's stream id.
local a = args()
if #a.job > 0 then
  redis.call('HSET', KEYS[1], unpack(a.job))
end
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'meta', ARGV[2])
end
return xadd_trimmed(KEYS[2], a.maxlen, unpack(a.evt))
