-- Which events lie below the stored position of their stream (true; the others
-- are absent): they were applied already, by an earlier delivery or by another
-- consumer. Also returns the
-- writes that move each stream's position to the delivery's end (never back), to
-- run once everything else succeeded: a script that fails midway keeps its earlier
-- writes, and a position written before them would skip the retried batch.
local function replayed_events()
  local replay, moves = {}, {}
  if STREAMS == 0 then return replay, moves end
  local keys = {}
  for s = 1, STREAMS do keys[s] = p .. 'position:' .. ARGV[5 + s] end
  local stored = redis.call('MGET', unpack(keys))
  local floor, behind = {}, false
  for s = 1, STREAMS do
    floor[s] = tonumber(stored[s])
    if floor[s] ~= nil and tonumber(ARGV[5 + 2 * STREAMS + s]) < floor[s] then behind = true end
  end
  -- Usually every event is at or past its stream's position: no event to look at.
  if behind then
    local i = 0
    for s, offset in string.gmatch(OFFSETS, '(%d+),(-?%d+);') do
      i = i + 1
      local at = floor[tonumber(s)]
      if at ~= nil and tonumber(offset) < at then replay[i] = true end
    end
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
  -- Usually no event is below its position nor in the mirror: no event to look at.
  local clean = next(replay) == nil and not string.find(VERDICTS, '0', 1, true)
  local flags = {}
  local function mark()
    for i = 1, N do
      if replay[i] then
        flags[i] = '2'
      elseif string.byte(VERDICTS, i) == 48 then -- '0': the mirror has it (verified below)
        flags[i] = '0'
      else
        flags[i] = '1'
      end
    end
  end
  if not clean then mark() end
  local tail = {}
  if window ~= '0' then
    tail = window_tail(kind)
    if not tail then return { 'stale' } end
    if #tail > 0 then
      if clean then mark() end
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
  local reply = { 'ok', string.rep('1', N), apply() }
  if window ~= '0' then
    local state = record_ids(kind, HASHES)
    state[#state + 1] = tail
    reply[#reply + 1] = state
  end
  for _, move in ipairs(moves) do redis.call('SET', move[1], move[2]) end
  return reply
end
