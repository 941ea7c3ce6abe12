local p = ARGV[1]
local window = ARGV[2]
-- ARGV[3] = now (ms), ARGV[4] = ids per window generation, ARGV[5] = the number S
-- of source streams the batch carries positions for, then their S names, then the
-- events: five values each (the first is the event id's 16-byte hash), seven when
-- S > 0 (then the last two are the event's stream, 1 to S, and its offset).
local STREAMS = tonumber(ARGV[5])
local HEAD = 5 + STREAMS
local WIDTH = STREAMS == 0 and 5 or 7

-- The shortest decimal form (15, 16 or 17 significant digits) that parses back to
-- exactly the same double: Lua's tostring keeps only 14 digits.
local function fmt(x)
  for digits = 15, 16 do
    local s = string.format('%.' .. digits .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

-- Integer increments of sorted-set scores or hash fields, summed in Lua and written
-- once per member at the end of the batch (in first-touched order).
local counters, counter_keys = {}, {}
local function bump(cmd, key, member, delta)
  local c = counters[key]
  if c == nil then
    c = { cmd = cmd, members = {}, delta = {} }
    counters[key] = c
    counter_keys[#counter_keys + 1] = key
  end
  if c.delta[member] == nil then
    c.delta[member] = 0
    c.members[#c.members + 1] = member
  end
  c.delta[member] = c.delta[member] + delta
end
local function flush_counters()
  for _, key in ipairs(counter_keys) do
    local c = counters[key]
    for _, m in ipairs(c.members) do
      local d = string.format('%d', c.delta[m])
      if c.cmd == 'ZINCRBY' then
        redis.call('ZINCRBY', key, d, m)
      else
        redis.call('HINCRBY', key, m, d)
      end
    end
  end
end

-- Aggregate hashes, read once (HMGET) and written once (HSET) per batch.
local sums, sum_keys = {}, {}
local function load(key, fields)
  local s = sums[key]
  if s == nil then
    local v = redis.call('HMGET', key, unpack(fields))
    s = {}
    for i, f in ipairs(fields) do s[f] = tonumber(v[i]) end
    s.count = s.count or 0
    sums[key] = s
    sum_keys[#sum_keys + 1] = key
  end
  return s
end
local function flush_sums(int_fields, float_fields)
  for _, key in ipairs(sum_keys) do
    local s = sums[key]
    local args = {}
    for _, f in ipairs(int_fields) do
      args[#args + 1] = f
      args[#args + 1] = string.format('%d', s[f])
    end
    for _, f in ipairs(float_fields) do
      args[#args + 1] = f
      args[#args + 1] = fmt(s[f])
    end
    redis.call('HSET', key, unpack(args))
  end
end
