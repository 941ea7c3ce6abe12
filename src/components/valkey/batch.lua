-- Which events lie below the stored position of their stream (true): they were
-- applied already, by an earlier delivery or by another consumer. Also returns the
-- writes that move each stream's position to the delivery's end (never back), to
-- run once everything else succeeded: a script that fails midway keeps its earlier
-- writes, and a position written before them would skip the retried batch.
local function replayed_events()
  local replay, moves = {}, {}
  if STREAMS == 0 then return replay, moves end
  local keys = {}
  for s = 1, STREAMS do keys[s] = p .. 'position:' .. ARGV[9 + s] end
  local stored = redis.call('MGET', unpack(keys))
  local floor = {}
  for s = 1, STREAMS do floor[s] = tonumber(stored[s]) end
  for i = 1, N do
    local base = FIRST + (i - 1) * WIDTH
    local s, offset = tonumber(ARGV[base]), tonumber(ARGV[base + 1])
    replay[i] = floor[s] ~= nil and offset < floor[s]
  end
  for s = 1, STREAMS do
    local reached = tonumber(ARGV[9 + STREAMS + s])
    if floor[s] == nil or reached > floor[s] then
      moves[#moves + 1] = { keys[s], ARGV[9 + STREAMS + s] }
    end
  end
  return replay, moves
end

-- Applies the batch of `kind`, optimistically: the delta was folded by the caller
-- assuming every event is new. If any is not (below its stream's position, found
-- in the caller's mirror of the id window, or in what was appended to the window
-- after the mirror's point), nothing is written and the reply is {'retry', flags}
-- (one flag per event: '1' new, '0' a duplicate id, '2' below its stream's
-- position), for the caller to fold again without them; {'stale'} asks it to
-- reload its mirror first. `check()` may refuse the delta in the same way
-- (returning its reply); otherwise `apply()` writes it (returning a list of
-- values for the caller), then the ids and positions are recorded, and the reply
-- is {'ok', flags, apply()'s list, window}, where window (when the window is on)
-- is record_ids' answer followed by the tail the caller's mirror lacked.
local function apply_batch(kind, check, apply)
  local replay, moves = replayed_events()
  local flags, clean = {}, true
  for i = 1, N do
    if replay[i] then
      flags[i] = '2'
      clean = false
    elseif string.byte(VERDICTS, i) == 48 then -- '0': the mirror has it (verified below)
      flags[i] = '0'
      clean = false
    else
      flags[i] = '1'
    end
  end
  local tail = {}
  if window ~= '0' then
    tail = window_tail(kind)
    if not tail then return { 'stale' } end
    if #tail > 0 then
      local seen = tail_ids(tail)
      for i = 1, N do
        if flags[i] == '1' and seen[string.sub(HASHES, (i - 1) * ID + 1, i * ID)] then
          flags[i] = '0'
          clean = false
        end
      end
    end
  end
  if not clean then return { 'retry', table.concat(flags) } end
  local refused = check()
  if refused then return refused end
  local reply = { 'ok', table.concat(flags), apply() }
  if window ~= '0' then
    local state = record_ids(kind, HASHES)
    state[#state + 1] = tail
    reply[#reply + 1] = state
  end
  for _, move in ipairs(moves) do redis.call('SET', move[1], move[2]) end
  return reply
end
