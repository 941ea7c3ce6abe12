-- The delta of a batch of sales (after the events): the total scope (count,
-- quantity_sum, price_sum, revenue, price_min, price_max); the number of
-- categories, each with its name, its scope (same six values), the batch's
-- earliest sale by (ts, id) (ts, id, product), its newest ts, whether the prices
-- of every product sold follow ('1') or only those of the monitored product flujo
-- believes a closed category has ('0', with that product; '' after a '1'), the
-- price lists (count, then per product: product, count, then score (ts) and
-- member pairs, sorted), and its products (count, then product and quantity
-- pairs); then the products of all categories (same pairs).
local function scope()
  return { count = num(), quantity_sum = num(), price_sum = num(), revenue = num(),
    price_min = num(), price_max = num() }
end
local function pairs_list()
  local list = {}
  for i = 1, num() do list[i] = { arg(), arg() } end
  return list
end
local function price_lists()
  local lists = {}
  for l = 1, num() do
    local product, points = arg(), {}
    for i = 1, 2 * num() do points[i] = arg() end
    lists[l] = { product = product, points = points }
  end
  return lists
end
local total = scope()
local categories = {}
for c = 1, num() do
  local name = arg()
  local s = scope()
  local earliest = { ts = arg(), id = arg(), product = arg() }
  local newest = arg()
  local complete, known = arg() == '1', arg()
  categories[c] = { name = name, scope = s, earliest = earliest, newest = newest,
    complete = complete, known = known, lists = price_lists(), products = pairs_list() }
end
local products = pairs_list()
-- Lua's unpack takes a few thousand values at most: long lists go in chunks.
local PRICE_CHUNK = 500

local function merge_sales(key, s)
  merge_scope(key, s.count, { quantity_sum = s.quantity_sum },
    { price_sum = s.price_sum, revenue = s.revenue }, 'price_min', s.price_min, 'price_max', s.price_max)
end

-- True when string a is before b in byte order (Lua's `<` follows the server's
-- collation locale).
local function bytes_before(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- True when ts a is before ts b (decimal strings without leading zeros).
local function ts_before(a, b)
  if #a ~= #b then return #a < #b end
  return bytes_before(a, b)
end
-- True when a closed category: its newest sale LATENESS ms or more after its
-- earliest (in doubles, as flujo_actors::store::delta::closed).
local function is_closed(earliest_ts, newest_ts)
  return tonumber(newest_ts) - tonumber(earliest_ts) >= LATENESS
end

-- The monitor fields of each category's hash (read once, by check()).
local function read_monitor(c)
  local key = p .. 'sales:category:' .. c.name
  local h = redis.call('HMGET', key, 'monitored_product', 'earliest_ts', 'earliest_id', 'newest_ts')
  -- A missing field reads as false: nil here.
  c.key, c.old, c.ets, c.eid, c.stored_newest = key, h[1] or nil, h[2] or nil, h[3] or nil, h[4] or nil
  if c.old and not c.ets then c.legacy, c.old = true, nil end
  c.was_closed = c.ets ~= nil and is_closed(c.ets, c.stored_newest)
end

-- A category sent with only some prices ('0') must still be closed and monitor
-- the product flujo believes; else the reply is {'monitored', category} and
-- flujo sends every price of it.
local function check()
  for _, c in ipairs(categories) do
    read_monitor(c)
    if not c.complete and not (c.was_closed and c.old == c.known) then
      return { 'monitored', c.name }
    end
  end
  return nil
end

-- Adds (score, member) pairs to the sorted set `key`, in chunks.
local function zadd_pairs(key, scored)
  for from = 1, #scored, 2 * PRICE_CHUNK do
    redis.call('ZADD', key, unpack(scored, from, math.min(from + 2 * PRICE_CHUNK - 1, #scored)))
  end
end
-- Adds prices to the monitored product's stream, keeping the newest MONITORED.
local function add_prices(key, points)
  zadd_pairs(key, points)
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(MONITORED) + 1))
end

-- While a category is open, the prices of the products it does not monitor are
-- kept in one sorted set per category (`{p}sales:history:{category}`): every
-- member scored 0 and made of its product's tag (the product's byte length in 4
-- hex digits, then the product) and its stream member (`ts` in 19 digits, id,
-- NUL, price), so the set's byte order is (product, ts, id) and one product's
-- prices are one lexicographic range. A batch adds all its prices with one
-- ZADD; the category's `history-len` hash counts each product's prices, and a
-- product over MONITORED and a quarter is trimmed back to its newest MONITORED.
local HISTORY_SLACK = math.floor(tonumber(MONITORED) / 4)
local function product_tag(product) return string.format('%04x', #product) .. product end
-- The lexicographic range of one product's prices (':' sorts after every digit).
local function product_range(product)
  local tag = product_tag(product)
  return '[' .. tag, '(' .. tag .. ':'
end
-- Drops all but the newest MONITORED prices of `product`; returns how many it keeps.
local function trim_history(history, product)
  local lo, hi = product_range(product)
  local n = redis.call('ZLEXCOUNT', history, lo, hi)
  local drop = n - tonumber(MONITORED)
  if drop > 0 then
    local kept = redis.call('ZRANGE', history, lo, hi, 'BYLEX', 'LIMIT', drop, 1)[1]
    redis.call('ZREMRANGEBYLEX', history, lo, '(' .. kept)
    n = tonumber(MONITORED)
  end
  return n
end
-- Moves the stream's prices into the history as `product`'s.
local function stream_to_history(stream, history, product)
  local tag, scored = product_tag(product), {}
  for _, member in ipairs(redis.call('ZRANGE', stream, 0, -1)) do
    scored[#scored + 1] = 0
    scored[#scored + 1] = tag .. member
  end
  zadd_pairs(history, scored)
  redis.call('DEL', stream)
  return #scored / 2
end
-- Moves `product`'s prices from the history into the (empty) stream.
local function history_to_stream(history, stream, product)
  local lo, hi = product_range(product)
  local cut, scored = #product_tag(product) + 1, {}
  for _, member in ipairs(redis.call('ZRANGE', history, lo, hi, 'BYLEX')) do
    local point = string.sub(member, cut)
    scored[#scored + 1] = string.sub(point, 1, 19)
    scored[#scored + 1] = point
  end
  if #scored > 0 then
    add_prices(stream, scored)
    redis.call('ZREMRANGEBYLEX', history, lo, hi)
  end
end

-- The category's monitored product and price sets after the batch (the rules of
-- flujo_actors::store, as MemoryStore applies them).
local function apply_monitor(c)
  local stream = p .. 'sales:monitored:' .. c.name .. ':newest'
  local history = p .. 'sales:history:' .. c.name
  local lengths = p .. 'sales:history-len:' .. c.name
  -- An older flujo's stream, in arrival order: dropped.
  if c.legacy then redis.call('DEL', p .. 'sales:monitored:' .. c.name .. ':prices') end
  local e, ets, eid, mon = c.earliest, c.ets, c.eid, c.old
  if not ets or ts_before(e.ts, ets) or (e.ts == ets and bytes_before(e.id, eid)) then
    ets, eid, mon = e.ts, e.id, e.product
  end
  local newest = c.stored_newest
  if not newest or ts_before(newest, c.newest) then newest = c.newest end
  local open = not is_closed(ets, newest)
  if mon ~= c.old then
    if c.old and open then
      redis.call('HSET', lengths, c.old, stream_to_history(stream, history, c.old))
    else
      redis.call('DEL', stream)
    end
    history_to_stream(history, stream, mon)
    redis.call('HDEL', lengths, mon)
  end
  local others, scored = {}, {}
  for _, list in ipairs(c.lists) do
    if list.product == mon then
      add_prices(stream, list.points)
    elseif open then
      others[#others + 1] = list
      local tag = product_tag(list.product)
      for i = 2, #list.points, 2 do
        scored[#scored + 1] = 0
        scored[#scored + 1] = tag .. list.points[i]
      end
    end
  end
  zadd_pairs(history, scored)
  for from = 1, #others, PRICE_CHUNK do
    local to = math.min(from + PRICE_CHUNK - 1, #others)
    local names = {}
    for i = from, to do names[#names + 1] = others[i].product end
    local known = redis.call('HMGET', lengths, unpack(names))
    local fields = {}
    for i = from, to do
      local list = others[i]
      local len = (tonumber(known[i - from + 1]) or 0) + #list.points / 2
      if len > tonumber(MONITORED) + HISTORY_SLACK then len = trim_history(history, list.product) end
      fields[#fields + 1] = list.product
      fields[#fields + 1] = len
    end
    redis.call('HSET', lengths, unpack(fields))
  end
  redis.call('HSET', c.key, 'monitored_product', mon, 'earliest_ts', ets, 'earliest_id', eid,
    'newest_ts', newest)
  c.monitored, c.open, c.drop = mon, open, c.ets ~= nil and not c.was_closed and not open
end

-- A category that just closed forgets the prices of its other products.
local function drop_histories(c)
  redis.call('UNLINK', p .. 'sales:history:' .. c.name, p .. 'sales:history-len:' .. c.name)
end

local function apply()
  local extra = {}
  merge_sales(p .. 'sales:total', total)
  for _, c in ipairs(categories) do
    merge_sales(c.key, c.scope)
    apply_monitor(c)
    local ranking = p .. 'sales:products:' .. c.name
    for _, pq in ipairs(c.products) do redis.call('ZINCRBY', ranking, pq[2], pq[1]) end
    if c.drop then drop_histories(c) end
    extra[#extra + 1] = c.name
    extra[#extra + 1] = c.monitored
    extra[#extra + 1] = c.open and '0' or '1'
  end
  local ranking = p .. 'sales:products'
  for _, pq in ipairs(products) do redis.call('ZINCRBY', ranking, pq[2], pq[1]) end
  return extra
end

return apply_batch('sale', check, apply)
