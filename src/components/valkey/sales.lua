local INTS = { 'count', 'quantity_sum' }
local FLOATS = { 'price_sum', 'revenue', 'price_min', 'price_max' }
local FIELDS = { 'count', 'quantity_sum', 'price_sum', 'revenue', 'price_min', 'price_max' }

local function add(s, price, quantity)
  if s.count == 0 then
    s.price_min = price
    s.price_max = price
    s.quantity_sum = 0
    s.price_sum = 0
    s.revenue = 0
  else
    if price < s.price_min then s.price_min = price end
    if price > s.price_max then s.price_max = price end
  end
  s.count = s.count + 1
  s.quantity_sum = s.quantity_sum + quantity
  s.price_sum = s.price_sum + price
  s.revenue = s.revenue + price * quantity
end

local monitored = {}
local flags = {}
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local b = 3 + i * 5
  local id, category, product = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local price, quantity = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if first_time('sale', id) then
    flags[i + 1] = '1'
    local category_key = p .. 'sales:category:' .. category
    add(load(p .. 'sales:total', FIELDS), price, quantity)
    add(load(category_key, FIELDS), price, quantity)
    bump('ZINCRBY', p .. 'sales:products', product, quantity)
    bump('ZINCRBY', p .. 'sales:products:' .. category, product, quantity)
    local m = monitored[category]
    if m == nil then
      redis.call('HSETNX', category_key, 'monitored_product', product)
      m = redis.call('HGET', category_key, 'monitored_product')
      monitored[category] = m
    end
    if m == product then
      redis.call('XADD', p .. 'sales:monitored:' .. category .. ':prices',
        'MAXLEN', '=', MONITORED, '*', 'price', fmt(price))
    end
  else
    flags[i + 1] = '0'
  end
end
flush_sums(INTS, FLOATS)
flush_counters()
return table.concat(flags)
