-- Folds one event into an aggregate hash: `count`, the sums in `deltas`, and the
-- min/max of `x` in the fields `min` and `max`.
local function accumulate(s, x, min, max, deltas)
  if s.count == 0 then
    s[min] = x
    s[max] = x
    for f in pairs(deltas) do s[f] = 0 end
  else
    if x < s[min] then s[min] = x end
    if x > s[max] then s[max] = x end
  end
  s.count = s.count + 1
  for f, d in pairs(deltas) do s[f] = s[f] + d end
end

-- Which events lie below the stored position of their stream (true): they were
-- applied already, by an earlier delivery or by another consumer. Also returns
-- the writes that move each stream's position past the batch (never back), to run
-- once everything else succeeded: a script that fails midway keeps its earlier
-- writes, and a position written before them would skip the retried batch.
local function replayed_events(n)
  local replay, moves = {}, {}
  if STREAMS == 0 then return replay, moves end
  local keys = {}
  for s = 1, STREAMS do keys[s] = p .. 'position:' .. ARGV[5 + s] end
  local stored = redis.call('MGET', unpack(keys))
  local floor, reached = {}, {}
  for s = 1, STREAMS do floor[s] = tonumber(stored[s]) end
  for i = 1, n do
    local base = HEAD + (i - 1) * WIDTH
    local s, offset = tonumber(ARGV[base + 6]), tonumber(ARGV[base + 7])
    replay[i] = floor[s] ~= nil and offset < floor[s]
    if reached[s] == nil or offset + 1 > reached[s] then reached[s] = offset + 1 end
  end
  for s = 1, STREAMS do
    if reached[s] and (floor[s] == nil or reached[s] > floor[s]) then
      moves[#moves + 1] = { keys[s], string.format('%d', reached[s]) }
    end
  end
  return replay, moves
end

-- Applies the batch of `kind`: `apply(b)` for each event past its stream's position
-- whose id is new within the window (`b` = the index in ARGV of its first value
-- after the id hash), then writes the touched aggregates once. Returns one flag per
-- event: '1' applied, '0' a duplicate id, '2' below its stream's position.
local function apply_batch(kind, int_fields, float_fields, apply)
  local n = (#ARGV - HEAD) / WIDTH
  local replay, moves = replayed_events(n)
  local hashes, at = {}, {}
  for i = 1, n do
    if not replay[i] then
      hashes[#hashes + 1] = ARGV[HEAD + (i - 1) * WIDTH + 1]
      at[#at + 1] = i
    end
  end
  local fresh = fresh_ids(kind, hashes)
  local flags = {}
  for i = 1, n do flags[i] = '2' end
  for j, i in ipairs(at) do
    if fresh[j] then
      flags[i] = '1'
      apply(HEAD + (i - 1) * WIDTH + 2)
    else
      flags[i] = '0'
    end
  end
  flush_sums(int_fields, float_fields)
  flush_counters()
  for _, move in ipairs(moves) do redis.call('SET', move[1], move[2]) end
  return table.concat(flags)
end
