-- Move exporters' submissions from the intake list onto the event stream, oldest first, in one
-- atomic step (a crash cannot pop a submission without its event). Each valid submission becomes
-- one XADD with an auto id (`*`) and no trimming, so nothing an exporter sends can choose an id,
-- trim the stream or delete from it: the submission's JSON only ever supplies field/value pairs.
--
-- A submission is a JSON array of strings [field, value, field, value, ...] (order and repeats
-- kept) or a JSON object {field: value} (fields sorted, `type` first); values are strings or
-- integers. Anything else (not JSON, odd length, nested values, over ARGV[2] bytes or ARGV[4]
-- fields) becomes one `type INTAKE_REJECTED` event carrying the reason, the size, the SHA-1 and the
-- first ARGV[3] bytes of the submission, which the consumer dead-letters like any event it cannot
-- handle.
--
-- KEYS[1] intake list, KEYS[2] event stream
-- ARGV[1] most submissions to move, ARGV[2] most bytes in one submission, ARGV[3] bytes of a
--         rejected submission kept in its INTAKE_REJECTED event, ARGV[4] most fields in one submission
-- returns {moved, rejected}: submissions moved as events, and those turned into INTAKE_REJECTED

local popped = redis.call('LPOP', KEYS[1], ARGV[1])
if not popped then
    return {0, 0}
end
local max_bytes, head_bytes, max_fields = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

local function scalar(value)
    if type(value) == 'string' then
        return value
    end
    if type(value) == 'number' and value == math.floor(value) and math.abs(value) < 2 ^ 53 then
        return string.format('%d', value)
    end
    return nil
end

-- The XADD arguments after `*`, or nil and the reason.
local function fields_of(payload)
    if #payload > max_bytes then
        return nil, 'larger than ' .. max_bytes .. ' bytes'
    end
    local ok, decoded = pcall(cjson.decode, payload)
    if not ok or type(decoded) ~= 'table' then
        return nil, 'not a JSON array or object'
    end
    local out, n, count = {}, #decoded, 0
    for _ in pairs(decoded) do
        count = count + 1
    end
    if count == 0 then
        return nil, 'no fields'
    end
    if count > 2 * max_fields then -- also keeps unpack() below Lua's stack limit
        return nil, 'more than ' .. max_fields .. ' fields'
    end
    if count == n then -- an array: field, value, field, value, ...
        if n % 2 == 1 then
            return nil, 'an odd number of items (' .. n .. '): fields and values go in pairs'
        end
        for i = 1, n do
            out[i] = scalar(decoded[i])
            if out[i] == nil then
                return nil, 'item ' .. i .. ' is not a string or an integer'
            end
        end
        return out
    end
    local names = {}
    for name in pairs(decoded) do
        if type(name) ~= 'string' then
            return nil, 'not a JSON array or object'
        end
        names[#names + 1] = name
    end
    table.sort(names, function(a, b)
        if a == 'type' or b == 'type' then
            return a == 'type' and b ~= 'type'
        end
        return a < b
    end)
    for _, name in ipairs(names) do
        local value = scalar(decoded[name])
        if value == nil then
            return nil, 'field ' .. string.sub(name, 1, 40) .. ' is not a string or an integer'
        end
        out[#out + 1] = name
        out[#out + 1] = value
    end
    return out
end

local moved, rejected = 0, 0
for _, payload in ipairs(popped) do
    local fields, why = fields_of(payload)
    if fields then
        redis.call('XADD', KEYS[2], '*', unpack(fields))
        moved = moved + 1
    else
        redis.call('XADD', KEYS[2], '*', 'type', 'INTAKE_REJECTED', 'intake_error', why,
            'intake_bytes', tostring(#payload), 'intake_sha1', redis.sha1hex(payload),
            'intake_head', string.sub(payload, 1, head_bytes))
        rejected = rejected + 1
    end
end
return {moved, rejected}
