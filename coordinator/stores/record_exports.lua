-- Record a batch's exports, grouped by config, in one call: per config the newest file wins, every
-- export's samples count, and stream ids at or before the config's last_event_id are redeliveries
-- (skipped). Each config is checked and written on its own; the call as a whole is atomic, so
-- nothing else interleaves.
-- KEYS[1] the active-jobs hash   KEYS[2] the priority zset
-- then per config: its config hash, and that config's active job hash when ARGV says it has one
-- ARGV[1] now   ARGV[2] the ineligible score   ARGV[3] "queued"
-- then per config: config key, its active job id as the caller read it ("" for none), the count
-- of its exports, and five per export, oldest first: event id ("" if none), npz_path, samples,
-- board_type, num_players
-- Returns one action per config, in order: "moved" (its active job changed since the caller read
-- it: nothing written), "duplicate", "updated" (the queued job now points at the newest file) or
-- "recorded".
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

local now, queued = ARGV[1], ARGV[3]
local function record(config, job, config_key, expected, first, count)
    local current = redis.call('HGET', KEYS[1], config_key) or ''
    if current ~= expected then return 'moved' end
    local last = redis.call('HGET', config, 'last_event_id')
    local fresh, samples, newest = 0, 0, nil
    for i = first, first + 5 * (count - 1), 5 do
        if not at_or_before(ARGV[i], last) then
            fresh = fresh + 1
            samples = samples + tonumber(ARGV[i + 2])
            newest = i
        end
    end
    if fresh == 0 then return 'duplicate' end
    local version = tostring((tonumber(redis.call('HGET', config, 'data_version')) or 0) + fresh)
    redis.call('HSET', config, 'npz_path', ARGV[newest + 1], 'samples', ARGV[newest + 2],
               'data_version', version, 'exported_at', now, 'board_type', ARGV[newest + 3],
               'num_players', ARGV[newest + 4])
    if ARGV[newest] ~= '' then redis.call('HSET', config, 'last_event_id', ARGV[newest]) end
    redis.call('HSETNX', config, 'first_seen_at', now)
    -- New data and no job: the config waits for a GPU from now (the wait bound counts from here).
    if current == '' then redis.call('HSETNX', config, 'waiting_since', now) end
    redis.call('HINCRBY', config, 'new_samples', samples)
    redis.call('ZADD', KEYS[2], 'NX', ARGV[2], config_key)
    if job and redis.call('HGET', job, 'state') == queued then
        redis.call('HSET', job, 'npz_path', ARGV[newest + 1], 'samples', ARGV[newest + 2],
                   'data_version', version, 'updated_at', now)
        return 'updated'
    end
    return 'recorded'
end

local actions, k, a = {}, 3, 4
while a <= #ARGV do
    local config_key, expected, count = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    local config, job = KEYS[k], nil
    k = k + 1
    if expected ~= '' then
        job = KEYS[k]
        k = k + 1
    end
    actions[#actions + 1] = record(config, job, config_key, expected, a + 3, count)
    a = a + 3 + 5 * count
end
return actions
