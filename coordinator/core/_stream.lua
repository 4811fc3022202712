-- Prepended by coordinator/core/lua.py to every script: the one rule for trimming the event stream.
-- xadd_trimmed(stream, maxlen, field, value, ...): XADD with an auto id, trimmed to about `maxlen`
-- entries (MAXLEN ~); `maxlen` '0' means not trimmed (events.stream_maxlen: 0; the periodic trim
-- still applies the byte budget). Returns the entry id.
local function xadd_trimmed(stream, maxlen, ...)
  if maxlen == '0' then
    return redis.call('XADD', stream, '*', ...)
  end
  return redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', ...)
end
