-- Prepended by coordinator/core/lua.py to every script: the scripts' shared helpers.
-- args(): the script's named arguments, one JSON object in ARGV[1] (every value a string, a list of
-- strings, or a flat [field, value, ...] list; state names and event types come from the Python constants).
local function args()
  return cjson.decode(ARGV[1])
end
-- listed(list, value): whether `value` is in `list` (e.g. a change's allowed "from" states).
local function listed(list, value)
  for _, s in ipairs(list) do
    if s == value then return true end
  end
  return false
end
