local FIELDS = { 'count', 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }

return apply_batch('tweet', { 'count' },
  { 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }, function(b)
  local location, weather = ARGV[b], ARGV[b + 1]
  local temperature, humidity = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local deltas = { temperature_sum = temperature, humidity_sum = humidity }
  accumulate(load(p .. 'tweets:total', FIELDS), temperature, 'temperature_min',
    'temperature_max', deltas)
  accumulate(load(p .. 'tweets:location:' .. location, FIELDS), temperature,
    'temperature_min', 'temperature_max', deltas)
  bump('HINCRBY', p .. 'tweets:weather', weather, 1)
  bump('ZINCRBY', p .. 'tweets:locations', location, 1)
end)
