-- Record a batch's exports, grouped by config, in one call: per config the newest file wins, every
-- export's samples count, and stream ids at or before the config's last_event_id are redeliveries
-- (skipped). Each config is checked and written on its own; the call as a whole is atomic, so
-- nothing else interleaves. The config store's own script (coordinator/stores/configs.py).
-- KEYS[1] the active-jobs hash   KEYS[2] the priority zset
-- then per config: its config hash, and that config's active job hash when it has one (in ARGV)
-- ARGV[1] JSON: now, ineligible (the score of a config not yet scored), queued (the state whose job
--   follows the newest file), configs: a list of {config_key, job (its active job id as the caller
--   read it, '' for none), exports: a list of [event id ('' if none), npz_path, samples, board_type,
--   num_players], oldest first}
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

local a = args()
local function record(config, job, c)
    local current = redis.call('HGET', KEYS[1], c.config_key) or ''
    if current ~= c.job then return 'moved' end
    local last = redis.call('HGET', config, 'last_event_id')
    local fresh, samples, newest = 0, 0, nil
    for _, e in ipairs(c.exports) do
        if not at_or_before(e[1], last) then
            fresh = fresh + 1
            samples = samples + tonumber(e[3])
            newest = e
        end
    end
    if fresh == 0 then return 'duplicate' end
    local version = tostring((tonumber(redis.call('HGET', config, 'data_version')) or 0) + fresh)
    redis.call('HSET', config, 'npz_path', newest[2], 'samples', newest[3],
               'data_version', version, 'exported_at', a.now, 'board_type', newest[4],
               'num_players', newest[5])
    if newest[1] ~= '' then redis.call('HSET', config, 'last_event_id', newest[1]) end
    redis.call('HSETNX', config, 'first_seen_at', a.now)
    -- New data and no job: the config waits for a GPU from now (the wait bound counts from here).
    if current == '' then redis.call('HSETNX', config, 'waiting_since', a.now) end
    redis.call('HINCRBY', config, 'new_samples', samples)
    redis.call('ZADD', KEYS[2], 'NX', a.ineligible, c.config_key)
    if job and redis.call('HGET', job, 'state') == a.queued then
        redis.call('HSET', job, 'npz_path', newest[2], 'samples', newest[3],
                   'data_version', version, 'updated_at', a.now)
        return 'updated'
    end
    return 'recorded'
end

local actions, k = {}, 3
for _, c in ipairs(a.configs) do
    local config, job = KEYS[k], nil
    k = k + 1
    if c.job ~= '' then
        job = KEYS[k]
        k = k + 1
    end
    actions[#actions + 1] = record(config, job, c)
end
return actions
