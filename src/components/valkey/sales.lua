-- The delta of a batch of sales (after the events): the total scope (count,
-- quantity_sum, price_sum, revenue, price_min, price_max); the number of
-- categories, each with its name, its scope (same six values), the monitored
-- product the caller believes it has ('' if unknown) with the prices of that
-- product's sales in the batch (count, then the prices), the product of the
-- category's first sale with its prices (same form), and its products (count, then
-- product and quantity pairs); then the products of all categories (same pairs).
local function scope()
  return { count = num(), quantity_sum = num(), price_sum = num(), revenue = num(),
    price_min = num(), price_max = num() }
end
local function prices()
  local list = {}
  for i = 1, num() do list[i] = arg() end
  return list
end
local function pairs_list()
  local list = {}
  for i = 1, num() do list[i] = { arg(), arg() } end
  return list
end
local total = scope()
local categories = {}
for c = 1, num() do
  local name = arg()
  local s = scope()
  local known, known_prices = arg(), prices()
  local first, first_prices = arg(), prices()
  categories[c] = { name = name, scope = s, known = known, known_prices = known_prices,
    first = first, first_prices = first_prices, products = pairs_list() }
end
local products = pairs_list()

local function merge_sales(key, s)
  merge_scope(key, s.count, { quantity_sum = s.quantity_sum },
    { price_sum = s.price_sum, revenue = s.revenue }, 'price_min', s.price_min, 'price_max', s.price_max)
end

-- Each category's monitored product must be the one the caller folded prices for:
-- the stored one, or the batch's first product when none is stored yet.
local function check()
  for _, c in ipairs(categories) do
    local m = redis.call('HGET', p .. 'sales:category:' .. c.name, 'monitored_product')
    if not m then
      c.monitored, c.prices, c.set = c.first, c.first_prices, true
    elseif m == c.known then
      c.monitored, c.prices = m, c.known_prices
    elseif m == c.first then
      c.monitored, c.prices = m, c.first_prices
    else
      return { 'monitored', c.name, m }
    end
  end
  return nil
end

local function apply()
  local extra = {}
  merge_sales(p .. 'sales:total', total)
  for _, c in ipairs(categories) do
    local key = p .. 'sales:category:' .. c.name
    merge_sales(key, c.scope)
    if c.set then redis.call('HSETNX', key, 'monitored_product', c.monitored) end
    local stream = p .. 'sales:monitored:' .. c.name .. ':prices'
    for _, price in ipairs(c.prices) do
      redis.call('XADD', stream, 'MAXLEN', '=', MONITORED, '*', 'price', fmt(tonumber(price)))
    end
    local ranking = p .. 'sales:products:' .. c.name
    for _, pq in ipairs(c.products) do redis.call('ZINCRBY', ranking, pq[2], pq[1]) end
    extra[#extra + 1] = c.name
    extra[#extra + 1] = c.monitored
  end
  local ranking = p .. 'sales:products'
  for _, pq in ipairs(products) do redis.call('ZINCRBY', ranking, pq[2], pq[1]) end
  return extra
end

return apply_batch('sale', check, apply)
