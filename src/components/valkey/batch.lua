-- Which events lie below the stored position of their stream (true): they were
-- applied already, by an earlier delivery or by another consumer. Also returns the
-- writes that move each stream's position to the delivery's end (never back), to
-- run once everything else succeeded: a script that fails midway keeps its earlier
-- writes, and a position written before them would skip the retried batch.
local function replayed_events()
  local replay, moves = {}, {}
  if STREAMS == 0 then return replay, moves end
  local keys = {}
  for s = 1, STREAMS do keys[s] = p .. 'position:' .. ARGV[5 + s] end
  local stored = redis.call('MGET', unpack(keys))
  local floor = {}
  for s = 1, STREAMS do floor[s] = tonumber(stored[s]) end
  for i = 1, N do
    local base = HEAD + (i - 1) * WIDTH
    local s, offset = tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
    replay[i] = floor[s] ~= nil and offset < floor[s]
  end
  for s = 1, STREAMS do
    local reached = tonumber(ARGV[5 + STREAMS + s])
    if floor[s] == nil or reached > floor[s] then
      moves[#moves + 1] = { keys[s], ARGV[5 + STREAMS + s] }
    end
  end
  return replay, moves
end

-- Applies the batch of `kind`, optimistically: the delta was folded by the caller
-- assuming every event is new. If any is not (below its stream's position, or an
-- id seen within the window), nothing is written and the reply is
-- {'retry', flags} (one flag per event: '1' new, '0' a duplicate id, '2' below its
-- stream's position), for the caller to fold again without them. `check()` may
-- refuse the delta in the same way (returning its reply); otherwise `apply()`
-- writes it (returning extra reply values), then the ids and positions are
-- recorded, and the reply is {'ok', flags, extra...}.
local function apply_batch(kind, check, apply)
  local replay, moves = replayed_events()
  local hashes, at = {}, {}
  for i = 1, N do
    if not replay[i] then
      hashes[#hashes + 1] = ARGV[HEAD + (i - 1) * WIDTH + 1]
      at[#at + 1] = i
    end
  end
  local fresh, new = seen_ids(kind, hashes)
  local flags, clean = {}, #at == N
  for i = 1, N do flags[i] = '2' end
  for j, i in ipairs(at) do
    if fresh[j] then
      flags[i] = '1'
    else
      flags[i] = '0'
      clean = false
    end
  end
  if not clean then return { 'retry', table.concat(flags) } end
  local refused = check()
  if refused then return refused end
  local reply = { 'ok', table.concat(flags) }
  for _, x in ipairs(apply()) do reply[#reply + 1] = x end
  record_ids(kind, new)
  for _, move in ipairs(moves) do redis.call('SET', move[1], move[2]) end
  return reply
end
