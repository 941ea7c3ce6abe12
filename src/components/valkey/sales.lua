-- The delta of a batch of sales (after the events): the total scope (count,
-- quantity_sum, price_sum, revenue, price_min, price_max); the number of
-- categories, each with its name, its scope (same six values), the batch's
-- earliest sale by (ts, id) (ts, id, product), its newest ts, whether the prices
-- of every product sold follow ('1') or only those of the monitored product flujo
-- believes a closed category has ('0', with that product; '' after a '1'), the
-- price lists (count, then per product: product, count, then its stream
-- members, sorted, each starting with its score: ts in 19 digits), and its
-- products (count, then product and quantity pairs); then the products of all
-- categories (same pairs).
local function scope()
  return { count = num(), quantity_sum = num(), price_sum = num(), revenue = num(),
    price_min = num(), price_max = num() }
end
local function pairs_list()
  local list = {}
  for i = 1, num() do list[i] = { arg(), arg() } end
  return list
end
-- A price list is read in place: its members are ARGV[from .. to].
local function price_lists()
  local lists = {}
  for l = 1, num() do
    local product, n = arg(), num()
    lists[l] = { product = product, from = cursor + 1, to = cursor + n }
    cursor = cursor + n
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

-- Adds the stream members t[from .. to] to the monitored product's stream (each
-- scored by its first 19 digits, its ts), keeping the newest MONITORED.
local function add_prices(key, t, from, to)
  for first = from, to, PRICE_CHUNK do
    local scored = {}
    for i = first, math.min(first + PRICE_CHUNK - 1, to) do
      scored[#scored + 1] = string.sub(t[i], 1, 19)
      scored[#scored + 1] = t[i]
    end
    redis.call('ZADD', key, unpack(scored))
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(tonumber(MONITORED) + 1))
end

-- While a category is open, the prices of each product it does not monitor are
-- kept in a list of its own (`{p}sales:history:{category}:{tag}`, the tag being
-- the product's byte length in 4 hex digits, then the product), its stream
-- members oldest first by byte order, i.e. by (ts, id); the category's
-- `history-tail` hash holds each listed product's newest member. Prices that all
-- follow that member are appended with one RPUSH (the usual case, as sales mostly
-- arrive in time order); prices that go back pop the list's tail back to where
-- they start and push the merge. A list over MONITORED and a quarter is trimmed
-- to its newest MONITORED (LTRIM).
local HISTORY_SLACK = math.floor(tonumber(MONITORED) / 4)
local function product_tag(product) return string.format('%04x', #product) .. product end
local function history_key(category, product)
  return p .. 'sales:history:' .. category .. ':' .. product_tag(product)
end
local function tails_key(category) return p .. 'sales:history-tail:' .. category end
-- True when stream member a is before b: by their 19-digit ts while both are
-- below 10^15 (exact as doubles), else byte by byte.
local function member_before(a, b)
  local ta, tb = string.sub(a, 1, 19), string.sub(b, 1, 19)
  if ta ~= tb and string.sub(ta, 1, 4) == '0000' and string.sub(tb, 1, 4) == '0000' then
    return tonumber(ta) < tonumber(tb)
  end
  return bytes_before(a, b)
end
-- Pushes t[from .. to] (in order) onto the tail of the list `key`, in chunks;
-- returns the list's length (or 0 when there was nothing to push).
local function push_all(key, t, from, to)
  local len = 0
  for first = from, to, 2 * PRICE_CHUNK do
    len = redis.call('RPUSH', key, unpack(t, first, math.min(first + 2 * PRICE_CHUNK - 1, to)))
  end
  return len
end
-- Adds the stream members t[from .. to] (ascending, no two equal, at least one)
-- to the history list `key`, whose newest member is `tail` (nil when the list is
-- empty), keeping it ascending with no two equal members; returns the list's
-- length. The popped tail is pushed back in the same script: nothing between
-- the two can fail once the script has written (Valkey checks memory before a
-- script starts, not at each write).
local function add_history(key, tail, t, from, to)
  if not tail or member_before(tail, t[from]) then return push_all(key, t, from, to) end
  local members = { unpack(t, from, to) }
  -- Pop the tail (newest first) back to a member before the first new one.
  local popped, count = {}, 8
  repeat
    local got = redis.call('RPOP', key, count)
    if not got then break end
    for _, m in ipairs(got) do popped[#popped + 1] = m end
    count = count * 4
  until member_before(popped[#popped], members[1])
  local merged, i, j = {}, #popped, 1
  while i >= 1 or j <= #members do
    local a, b = popped[i], members[j]
    if b == nil or (a ~= nil and member_before(a, b)) then
      merged[#merged + 1] = a
      i = i - 1
    else
      if a == b then i = i - 1 end
      merged[#merged + 1] = b
      j = j + 1
    end
  end
  return push_all(key, merged, 1, #merged)
end
-- Moves the stream's prices into `product`'s (empty) history list; returns the
-- newest of them, or nil.
local function stream_to_history(stream, category, product)
  local members = redis.call('ZRANGE', stream, 0, -1)
  push_all(history_key(category, product), members, 1, #members)
  redis.call('DEL', stream)
  return members[#members]
end
-- Moves `product`'s prices from its history list into the (empty) stream.
local function history_to_stream(category, stream, product)
  local key = history_key(category, product)
  local members = redis.call('LRANGE', key, 0, -1)
  if #members > 0 then
    add_prices(stream, members, 1, #members)
    redis.call('DEL', key)
  end
end
-- A category's history in the layout of an earlier flujo (one sorted set per
-- category, product-tagged members scored 0, a `history-len` hash of counts):
-- moved into the lists.
local function convert_old_history(category)
  local old, lengths = p .. 'sales:history:' .. category, p .. 'sales:history-len:' .. category
  if redis.call('EXISTS', lengths) == 0 then return end
  for _, product in ipairs(redis.call('HKEYS', lengths)) do
    local tag = product_tag(product)
    local members = {}
    for _, m in ipairs(redis.call('ZRANGE', old, '[' .. tag, '(' .. tag .. ':', 'BYLEX')) do
      members[#members + 1] = string.sub(m, #tag + 1)
    end
    if #members > 0 then
      -- Merged with a list a newer flujo may have started meanwhile.
      local tail = redis.call('HGET', tails_key(category), product) or nil
      local key = history_key(category, product)
      if add_history(key, tail, members, 1, #members) > tonumber(MONITORED) + HISTORY_SLACK then
        redis.call('LTRIM', key, -tonumber(MONITORED), -1)
      end
      if not tail or member_before(tail, members[#members]) then tail = members[#members] end
      redis.call('HSET', tails_key(category), product, tail)
    end
  end
  redis.call('UNLINK', old, lengths)
end

-- The category's monitored product and price sets after the batch (the rules of
-- flujo_actors::store, as MemoryStore applies them).
local function apply_monitor(c)
  local stream = p .. 'sales:monitored:' .. c.name .. ':newest'
  local tails = tails_key(c.name)
  -- An older flujo's stream, in arrival order: dropped.
  if c.legacy then redis.call('DEL', p .. 'sales:monitored:' .. c.name .. ':prices') end
  if not c.was_closed then convert_old_history(c.name) end
  local e, ets, eid, mon = c.earliest, c.ets, c.eid, c.old
  if not ets or ts_before(e.ts, ets) or (e.ts == ets and bytes_before(e.id, eid)) then
    ets, eid, mon = e.ts, e.id, e.product
  end
  local newest = c.stored_newest
  if not newest or ts_before(newest, c.newest) then newest = c.newest end
  local open = not is_closed(ets, newest)
  if mon ~= c.old then
    local tail = c.old and open and stream_to_history(stream, c.name, c.old)
    if tail then
      redis.call('HSET', tails, c.old, tail)
    else
      redis.call('DEL', stream)
    end
    history_to_stream(c.name, stream, mon)
    redis.call('HDEL', tails, mon)
  end
  local others = {}
  for _, list in ipairs(c.lists) do
    if list.to < list.from then -- no prices (flujo sends none such)
    elseif list.product == mon then
      add_prices(stream, ARGV, list.from, list.to)
    elseif open then
      others[#others + 1] = list
    end
  end
  for from = 1, #others, PRICE_CHUNK do
    local to = math.min(from + PRICE_CHUNK - 1, #others)
    local names = {}
    for i = from, to do names[#names + 1] = others[i].product end
    local known = redis.call('HMGET', tails, unpack(names))
    local fields = {}
    for i = from, to do
      local list, tail = others[i], known[i - from + 1] or nil
      -- The batch's members of a product are sorted, no two equal (delta.rs).
      local key, last = history_key(c.name, list.product), ARGV[list.to]
      if add_history(key, tail, ARGV, list.from, list.to) > tonumber(MONITORED) + HISTORY_SLACK then
        redis.call('LTRIM', key, -tonumber(MONITORED), -1)
      end
      if not tail or member_before(tail, last) then tail = last end
      fields[#fields + 1] = list.product
      fields[#fields + 1] = tail
    end
    redis.call('HSET', tails, unpack(fields))
  end
  redis.call('HSET', c.key, 'monitored_product', mon, 'earliest_ts', ets, 'earliest_id', eid,
    'newest_ts', newest)
  c.monitored, c.open, c.drop = mon, open, c.ets ~= nil and not c.was_closed and not open
end

-- A category that just closed forgets the prices of its other products.
local function drop_histories(c)
  local tails = tails_key(c.name)
  local keys = {}
  for _, product in ipairs(redis.call('HKEYS', tails)) do
    keys[#keys + 1] = history_key(c.name, product)
    if #keys == PRICE_CHUNK then
      redis.call('UNLINK', unpack(keys))
      keys = {}
    end
  end
  keys[#keys + 1] = tails
  redis.call('UNLINK', unpack(keys))
end

local function apply()
  local extra = {}
  merge_sales(p .. 'sales:total', total)
  for _, c in ipairs(categories) do
    merge_sales(c.key, c.scope)
    apply_monitor(c)
    local ranking = p .. 'sales:products:' .. c.name
    increment_scores(ranking, c.products)
    if c.drop then drop_histories(c) end
    extra[#extra + 1] = c.name
    extra[#extra + 1] = c.monitored
    extra[#extra + 1] = c.open and '0' or '1'
  end
  local ranking = p .. 'sales:products'
  increment_scores(ranking, products)
  return extra
end

return apply_batch('sale', check, apply)
