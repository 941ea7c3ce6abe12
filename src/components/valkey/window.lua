-- The bounded id window (the in-process twin is flujo_actors::dedup). Ids arrive as
-- 16-byte hashes and are kept in generations: sets `{p}dedup:{kind}:{n}`, oldest
-- first, described by the hash `{p}dedup:{kind}` (`oldest`, `newest`: generation
-- numbers; `opened:{n}`: ms generation n opened; `evicted`: ids forgotten early
-- because the window was full). A generation takes new ids until it holds
-- ARGV[4] ids or a window/3 has passed; when the open ones hold the cap
-- (GENERATIONS x ARGV[4]) the oldest is dropped whole. Each generation key
-- expires a whole window after its last write, so an id is remembered at least
-- a window unless the cap forced it out.
local now = tonumber(ARGV[3])
local generation_cap = tonumber(ARGV[4])
local GENERATIONS = 4 -- flujo_actors::dedup::GENERATIONS
-- Lua's unpack takes a few thousand values at most: larger batches go in chunks.
local CHUNK = 1000

-- Which of `hashes` are new within the window (true) or seen (false), and the
-- list of the new ones, without writing anything. A hash repeated inside the batch
-- is seen from its second time on.
local function seen_ids(kind, hashes)
  local fresh = {}
  if window == '0' then
    for i = 1, #hashes do fresh[i] = true end
    return fresh, {}
  end
  local meta = p .. 'dedup:' .. kind
  local m = redis.call('HMGET', meta, 'oldest', 'newest')
  local oldest, newest = tonumber(m[1]), tonumber(m[2])
  local seen = {}
  if newest then
    for g = oldest, newest do
      local key = meta .. ':' .. g
      for from = 1, #hashes, CHUNK do
        local r = redis.call('SMISMEMBER', key, unpack(hashes, from, math.min(from + CHUNK - 1, #hashes)))
        for j = 1, #r do
          if r[j] == 1 then seen[from + j - 1] = true end
        end
      end
    end
  end
  local batch, new = {}, {}
  for i, h in ipairs(hashes) do
    fresh[i] = not (seen[i] or batch[h])
    if fresh[i] then
      batch[h] = true
      new[#new + 1] = h
    end
  end
  return fresh, new
end

-- Records `new` (hashes `seen_ids` found new) in the window of `kind`.
local function record_ids(kind, new)
  if #new == 0 then return end
  local meta = p .. 'dedup:' .. kind
  local m = redis.call('HMGET', meta, 'oldest', 'newest')
  local oldest, newest = tonumber(m[1]), tonumber(m[2])

  local evicted = 0
  -- Opens the next generation, first making room for it: while the open ones
  -- hold more than G-1 generations' worth of ids (the cap), the oldest is dropped
  -- and its ids are counted as evicted. Generations that merely expired hold
  -- nothing and leave at the end; the smaller generations of an older flujo are
  -- only dropped when they really fill the cap.
  local function open_generation()
    local held = 0
    if newest then
      for g = oldest, newest do held = held + redis.call('SCARD', meta .. ':' .. g) end
    end
    newest = (newest or 0) + 1
    oldest = oldest or newest
    redis.call('HSET', meta, 'opened:' .. newest, now)
    while oldest < newest and held > (GENERATIONS - 1) * generation_cap do
      local old = meta .. ':' .. oldest
      local n = redis.call('SCARD', old)
      evicted = evicted + n
      held = held - n
      redis.call('UNLINK', old)
      redis.call('HDEL', meta, 'opened:' .. oldest)
      oldest = oldest + 1
    end
  end
  -- window/(G-1) each: when the (G+1)th generation opens, the oldest one's newest
  -- id is a whole window old (its key already expired), so only the cap drops ids.
  local slice = math.max(1, math.ceil(tonumber(window) / (GENERATIONS - 1)))
  if not newest or now - tonumber(redis.call('HGET', meta, 'opened:' .. newest) or 0) >= slice then
    open_generation()
  end
  local key = meta .. ':' .. newest
  local room = generation_cap - redis.call('SCARD', key)
  local at = 1
  while at <= #new do
    if room <= 0 then
      redis.call('PEXPIRE', key, window)
      open_generation()
      key = meta .. ':' .. newest
      room = generation_cap
    end
    local upto = math.min(at + math.min(room, CHUNK) - 1, #new)
    redis.call('SADD', key, unpack(new, at, upto))
    room = room - (upto - at + 1)
    at = upto + 1
  end
  redis.call('PEXPIRE', key, window)
  -- Generations that expired on their own leave the front.
  while oldest < newest and redis.call('EXISTS', meta .. ':' .. oldest) == 0 do
    redis.call('HDEL', meta, 'opened:' .. oldest)
    oldest = oldest + 1
  end
  redis.call('HSET', meta, 'oldest', oldest, 'newest', newest)
  if evicted > 0 then redis.call('HINCRBY', meta, 'evicted', evicted) end
end
