-- Record consecutive exports of one config at once: the newest file wins, every export's samples
-- count, stream ids at or before the config's last_event_id are redeliveries and skipped.
-- The same rule as JobStore._record_once (the WATCH/MULTI path), for many configs per round trip.
-- KEYS[1] the config hash   KEYS[2] the active-jobs hash   KEYS[3] the priority zset
-- KEYS[4] (only when ARGV[2] names a job) that job's hash
-- ARGV[1] config key   ARGV[2] its active job id as the caller read it ("" for none)
-- ARGV[3] now   ARGV[4] the ineligible score   ARGV[5] "queued"
-- ARGV[6..] five per export, oldest first: event id ("" if none), npz_path, samples, board_type, num_players
-- Returns "moved" (the active job changed since the caller read it: nothing written), "duplicate",
-- "updated" (the queued job now points at the newest file) or "recorded".
local current = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if current ~= ARGV[2] then return 'moved' end

local function parse(id)
    local ms, seq = string.match(id, '^(%d+)-?(%d*)$')
    return tonumber(ms), tonumber(seq) or 0
end
local function at_or_before(id, ref)
    if id == '' or not ref or ref == '' then return false end
    local a_ms, a_seq = parse(id)
    local b_ms, b_seq = parse(ref)
    return a_ms < b_ms or (a_ms == b_ms and a_seq <= b_seq)
end

local last = redis.call('HGET', KEYS[1], 'last_event_id')
local fresh, samples, newest = 0, 0, nil
for i = 6, #ARGV, 5 do
    if not at_or_before(ARGV[i], last) then
        fresh = fresh + 1
        samples = samples + tonumber(ARGV[i + 2])
        newest = i
    end
end
if fresh == 0 then return 'duplicate' end

local version = tostring((tonumber(redis.call('HGET', KEYS[1], 'data_version')) or 0) + fresh)
local now = ARGV[3]
redis.call('HSET', KEYS[1], 'npz_path', ARGV[newest + 1], 'samples', ARGV[newest + 2], 'data_version', version,
           'exported_at', now, 'board_type', ARGV[newest + 3], 'num_players', ARGV[newest + 4])
if ARGV[newest] ~= '' then redis.call('HSET', KEYS[1], 'last_event_id', ARGV[newest]) end
redis.call('HSETNX', KEYS[1], 'first_seen_at', now)
redis.call('HINCRBY', KEYS[1], 'new_samples', samples)
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[1])
if KEYS[4] and redis.call('HGET', KEYS[4], 'state') == ARGV[5] then
    redis.call('HSET', KEYS[4], 'npz_path', ARGV[newest + 1], 'samples', ARGV[newest + 2],
               'data_version', version, 'updated_at', now)
    return 'updated'
end
return 'recorded'
