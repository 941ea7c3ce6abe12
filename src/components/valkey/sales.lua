local FIELDS = { 'count', 'quantity_sum', 'price_sum', 'revenue', 'price_min', 'price_max' }

local monitored = {}
return apply_batch('sale', { 'count', 'quantity_sum' },
  { 'price_sum', 'revenue', 'price_min', 'price_max' }, function(b)
  local category, product = ARGV[b], ARGV[b + 1]
  local price, quantity = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local category_key = p .. 'sales:category:' .. category
  local deltas = { quantity_sum = quantity, price_sum = price, revenue = price * quantity }
  accumulate(load(p .. 'sales:total', FIELDS), price, 'price_min', 'price_max', deltas)
  accumulate(load(category_key, FIELDS), price, 'price_min', 'price_max', deltas)
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
end)
