local INTS = { 'count' }
local FLOATS = { 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }
local FIELDS = { 'count', 'temperature_sum', 'humidity_sum', 'temperature_min', 'temperature_max' }

local function add(s, temperature, humidity)
  if s.count == 0 then
    s.temperature_min = temperature
    s.temperature_max = temperature
    s.temperature_sum = 0
    s.humidity_sum = 0
  else
    if temperature < s.temperature_min then s.temperature_min = temperature end
    if temperature > s.temperature_max then s.temperature_max = temperature end
  end
  s.count = s.count + 1
  s.temperature_sum = s.temperature_sum + temperature
  s.humidity_sum = s.humidity_sum + humidity
end

local flags = {}
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local b = 3 + i * 5
  local id, location, weather = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local temperature, humidity = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if first_time('tweet', id) then
    flags[i + 1] = '1'
    add(load(p .. 'tweets:total', FIELDS), temperature, humidity)
    add(load(p .. 'tweets:location:' .. location, FIELDS), temperature, humidity)
    bump('HINCRBY', p .. 'tweets:weather', weather, 1)
    bump('ZINCRBY', p .. 'tweets:locations', location, 1)
  else
    flags[i + 1] = '0'
  end
end
flush_sums(INTS, FLOATS)
flush_counters()
return table.concat(flags)
