local p = ARGV[1]
local window = ARGV[2]
-- ARGV[3] = now (ms), ARGV[4] = ids per window generation, ARGV[5] = the number S
-- of source streams the batch carries positions for, then their S names, then per
-- stream the next offset after the whole delivery, then per stream the lowest
-- offset of the batch's events, then the number N of events, their ids' 16-byte
-- hashes in one string (HASHES), then when S > 0 each event's stream (1 to S) and
-- offset in one string (OFFSETS, `stream,offset;` per event, read only when a
-- stream's stored position is above its lowest offset). Then the batch folded
-- into per-key changes (the delta), which sales.lua or tweets.lua read in order
-- with `arg()`. Last come the caller's mirror of the id window (five values, see
-- window.lua) and VERDICTS, one character per event: '0' when the caller's mirror
-- holds its id or an earlier event of the batch has it, else '1'.
local STREAMS = tonumber(ARGV[5])
local HEAD = 6 + 3 * STREAMS
local N = tonumber(ARGV[HEAD])
local HASHES = ARGV[HEAD + 1]
local OFFSETS = STREAMS > 0 and ARGV[HEAD + 2] or ''
local cursor = HEAD + 1 + (STREAMS > 0 and 1 or 0)
local MIRROR = #ARGV - 5 -- the first of the mirror's values
local VERDICTS = ARGV[#ARGV]
local function arg()
  cursor = cursor + 1
  return ARGV[cursor]
end
local function num() return tonumber(arg()) end

-- The shortest decimal form (15, 16 or 17 significant digits) that parses back to
-- exactly the same double: Lua's tostring keeps only 14 digits.
local function fmt(x)
  for digits = 15, 16 do
    local s = string.format('%.' .. digits .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end

-- Adds a batch's scope to the aggregate hash `key`: `count`, integer sums `ints`
-- and float sums `floats` (field → batch value), and the extremes `min`/`max`
-- (field names `lo`/`hi`). Sums are the stored sum plus the batch's, as in every
-- flujo store.
local function merge_scope(key, count, ints, floats, lo, min, hi, max)
  if count == 0 then return end
  local fields = { 'count', lo, hi }
  for f in pairs(ints) do fields[#fields + 1] = f end
  for f in pairs(floats) do fields[#fields + 1] = f end
  local v = redis.call('HMGET', key, unpack(fields))
  local old = {}
  for i, f in ipairs(fields) do old[f] = tonumber(v[i]) end
  local stored = old.count or 0
  local args = { 'count', string.format('%d', stored + count) }
  if stored > 0 then
    if old[lo] < min then min = old[lo] end
    if old[hi] > max then max = old[hi] end
  end
  args[#args + 1] = lo
  args[#args + 1] = fmt(min)
  args[#args + 1] = hi
  args[#args + 1] = fmt(max)
  for f, d in pairs(ints) do
    args[#args + 1] = f
    args[#args + 1] = string.format('%d', (old[f] or 0) + d)
  end
  for f, d in pairs(floats) do
    args[#args + 1] = f
    args[#args + 1] = fmt((old[f] or 0) + d)
  end
  redis.call('HSET', key, unpack(args))
end
-- Adds to the scores of members of the sorted set `key` (`pairs`: member and
-- increment pairs, no member twice), as ZINCRBY would, in two calls per
-- PAIR_CHUNK members rather than one per member: ZMSCORE reads the scores, ZADD
-- writes each stored score plus its increment (the same double addition
-- ZINCRBY makes).
local PAIR_CHUNK = 500
local function increment_scores(key, pairs_of)
  for from = 1, #pairs_of, PAIR_CHUNK do
    local to = math.min(from + PAIR_CHUNK - 1, #pairs_of)
    local members = {}
    for i = from, to do members[#members + 1] = pairs_of[i][1] end
    local stored = redis.call('ZMSCORE', key, unpack(members))
    local scored = {}
    for i = from, to do
      scored[#scored + 1] = fmt((tonumber(stored[i - from + 1]) or 0) + tonumber(pairs_of[i][2]))
      scored[#scored + 1] = pairs_of[i][1]
    end
    redis.call('ZADD', key, unpack(scored))
  end
end
