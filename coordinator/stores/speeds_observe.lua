-- One timed epoch into the learned speed of (workload, GPU class), atomically (coordinator/stores/speeds.py).
-- KEYS[1] speeds hash: field "<workload>|<class>" -> JSON {s: seconds per epoch per sample, n: epochs, at, id}
-- ARGV[1] field   ARGV[2] observed seconds per sample   ARGV[3] smoothing (0..1]   ARGV[4] now (unix s)
-- ARGV[5] the event's stream id ('' for none): an id not newer than the last one counted is a redelivery
-- Returns the new estimate as a string, or false when skipped.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local old = raw and cjson.decode(raw) or nil
local function newer(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return true end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
if old and ARGV[5] ~= '' and old.id and old.id ~= '' and not newer(ARGV[5], old.id) then
  return false
end
local observed, alpha = tonumber(ARGV[2]), tonumber(ARGV[3])
local est, n = observed, 0
if old and tonumber(old.n) > 0 then
  n = tonumber(old.n)
  local weight = math.max(alpha, 1.0 / (n + 1))
  est = tonumber(old.s) + weight * (observed - tonumber(old.s))
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode({s = est, n = n + 1, at = tonumber(ARGV[4]), id = ARGV[5]}))
return tostring(est)
