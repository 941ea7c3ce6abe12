-- The bounded id window (the in-process twin is flujo_actors::dedup). Ids arrive as
-- 16-byte hashes and are kept in generations: strings `{p}ids:{kind}:{n}` holding
-- the hashes one after another (16 bytes an id, appended), oldest generation first,
-- described by the hash `{p}ids:{kind}` (`born`: ms the window was created, which
-- tells a recreated window from the one a mirror followed; `cap`: ids per
-- generation, fixed by the flujo that created it; `oldest`, `newest`:
-- generation numbers; `opened:{n}`: ms generation n opened; `evicted`: ids
-- forgotten early because the window was full). A generation takes new ids until
-- it holds `cap` ids or a window/3 has passed; when the open ones hold the cap
-- (GENERATIONS x `cap`) the oldest is dropped whole. Each generation key
-- expires a whole window after its last write, so an id is remembered at least a
-- window unless the cap forced it out.
--
-- Valkey never searches the window. Every flujo that applies batches keeps a
-- mirror of it (flujo_actors::dedup::IdWindow::insert_in), checks a batch against
-- the mirror before sending it, and names the point its mirror is complete up to
-- (the five values from ARGV[MIRROR], see common.lua): the window born at ms
-- `known_born`, generation `known_generation` (0: none) at byte length
-- `known_len`, whose last 16 bytes are `known_last` (a generation rebuilt under
-- the same number, e.g. after a rollback, does not match).
-- The script checks the batch only against what was appended after that point
-- (the tail: other applies' hashes, from this flujo or another), and answers the
-- tail with what it appended, so the mirror catches up. The ids the mirror found
-- are verified by generation: `claimed` lists the generations holding them, which
-- must all still be there (a generation expires or is dropped whole). A point
-- the window no longer has (dropped, expired, or of a window deleted since), a
-- generation gone, or a long tail asks the caller to reload its mirror ('stale').
local now = tonumber(ARGV[3])
local generation_cap = tonumber(ARGV[4])
local known_born = tonumber(ARGV[MIRROR])
local known_generation = tonumber(ARGV[MIRROR + 1])
local known_len = tonumber(ARGV[MIRROR + 2])
local known_last = ARGV[MIRROR + 3]
local claimed = ARGV[MIRROR + 4]
local GENERATIONS = 4 -- flujo_actors::dedup::GENERATIONS
local ID = 16 -- bytes an id's hash takes
-- A longer tail is cheaper to reload than to answer and check here.
local TAIL_MAX = 65536 * ID

local function meta_of(kind) return p .. 'ids:' .. kind end

-- What was appended after the caller's point, as {generation, bytes, ...}, or
-- nil when the caller must reload its mirror instead.
local function window_tail(kind)
  local meta = meta_of(kind)
  local m = redis.call('HMGET', meta, 'oldest', 'newest', 'born', 'cap')
  local oldest, newest = tonumber(m[1]), tonumber(m[2])
  if not newest then
    if known_generation == 0 and claimed == '' then return {} end
    return nil -- the mirror holds ids the window no longer has
  end
  if m[4] then generation_cap = tonumber(m[4]) end
  if known_generation < oldest or known_generation > newest then return nil end
  if tonumber(m[3]) ~= known_born then return nil end
  if known_len > 0 then
    local at = meta .. ':' .. known_generation
    if redis.call('GETRANGE', at, known_len - ID, known_len - 1) ~= known_last then return nil end
  end
  for g in string.gmatch(claimed, '%d+') do
    g = tonumber(g)
    if g < oldest or g > newest or redis.call('EXISTS', meta .. ':' .. g) == 0 then return nil end
  end
  local tail, total = {}, 0
  for g = known_generation, newest do
    local key = meta .. ':' .. g
    local from, len = 0, redis.call('STRLEN', key)
    if g == known_generation then
      if len < known_len then return nil end
      from = known_len
    end
    if len > from then
      local bytes = redis.call('GETRANGE', key, from, -1)
      total = total + #bytes
      if total > TAIL_MAX then return nil end
      tail[#tail + 1] = g
      tail[#tail + 1] = bytes
    end
  end
  return tail
end

-- The set of hashes in a tail.
local function tail_ids(tail)
  local ids = {}
  for k = 2, #tail, 2 do
    local bytes = tail[k]
    for at = 1, #bytes, ID do ids[string.sub(bytes, at, at + ID - 1)] = true end
  end
  return ids
end

-- Appends `hashes` (16 bytes each, all new) to the window of `kind`. Returns
-- {born, oldest, newest, bytes in newest, {generation, ids appended to it, ...},
-- the last 16 bytes of newest}: where the mirror's point now is, and where the
-- hashes went.
local function record_ids(kind, hashes)
  local meta = meta_of(kind)
  local m = redis.call('HMGET', meta, 'oldest', 'newest')
  local oldest, newest = tonumber(m[1]), tonumber(m[2])
  local n = #hashes / ID

  local evicted = 0
  -- Opens the next generation, first making room for it: while the open ones
  -- hold more than G-1 generations' worth of ids (the cap), the oldest is dropped
  -- and its ids are counted as evicted. Generations that merely expired hold
  -- nothing and leave at the end.
  local function open_generation()
    local held = 0
    if newest then
      for g = oldest, newest do held = held + redis.call('STRLEN', meta .. ':' .. g) / ID end
    end
    if not newest then redis.call('HSET', meta, 'born', now, 'cap', generation_cap) end
    newest = (newest or 0) + 1
    oldest = oldest or newest
    redis.call('HSET', meta, 'opened:' .. newest, now)
    while oldest < newest and held > (GENERATIONS - 1) * generation_cap do
      local old = meta .. ':' .. oldest
      local dropped = redis.call('STRLEN', old) / ID
      evicted = evicted + dropped
      held = held - dropped
      redis.call('UNLINK', old)
      redis.call('HDEL', meta, 'opened:' .. oldest)
      oldest = oldest + 1
    end
  end
  local spans = {}
  if n > 0 then
    -- window/(G-1) each: when the (G+1)th generation opens, the oldest one's newest
    -- id is a whole window old (its key already expired), so only the cap drops ids.
    local slice = math.max(1, math.ceil(tonumber(window) / (GENERATIONS - 1)))
    -- A newest generation that expired (or was lost) is never rebuilt under its
    -- number: a mirror's point in it must not match other bytes.
    if not newest or now - tonumber(redis.call('HGET', meta, 'opened:' .. newest) or 0) >= slice
        or redis.call('EXISTS', meta .. ':' .. newest) == 0 then
      open_generation()
    end
    local key = meta .. ':' .. newest
    local room = generation_cap - redis.call('STRLEN', key) / ID
    local at = 1
    while at <= n do
      if room <= 0 then
        redis.call('PEXPIRE', key, window)
        open_generation()
        key = meta .. ':' .. newest
        room = generation_cap
      end
      local upto = math.min(at + room - 1, n)
      if at == 1 and upto == n then
        redis.call('APPEND', key, hashes)
      else
        redis.call('APPEND', key, string.sub(hashes, (at - 1) * ID + 1, upto * ID))
      end
      spans[#spans + 1] = newest
      spans[#spans + 1] = upto - at + 1
      room = room - (upto - at + 1)
      at = upto + 1
    end
    redis.call('PEXPIRE', key, window)
  end
  if not newest then return { 0, 0, 0, 0, spans, '' } end
  -- Generations that expired on their own leave the front.
  while oldest < newest and redis.call('EXISTS', meta .. ':' .. oldest) == 0 do
    redis.call('HDEL', meta, 'opened:' .. oldest)
    oldest = oldest + 1
  end
  redis.call('HSET', meta, 'oldest', oldest, 'newest', newest)
  if evicted > 0 then redis.call('HINCRBY', meta, 'evicted', evicted) end
  local born = tonumber(redis.call('HGET', meta, 'born'))
  local key = meta .. ':' .. newest
  local len = redis.call('STRLEN', key)
  local last = len > 0 and redis.call('GETRANGE', key, len - ID, len - 1) or ''
  return { born, oldest, newest, len, spans, last }
end
