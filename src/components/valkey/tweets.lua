-- The delta of a batch of tweets (after the events): the total scope (count,
-- temperature_sum, humidity_sum, temperature_min, temperature_max); the number of
-- weathers, each with its name and count; the number of locations, each with its
-- name and scope (same five values).
local function scope()
  return { count = num(), temperature_sum = num(), humidity_sum = num(),
    temperature_min = num(), temperature_max = num() }
end
local total = scope()
local weathers = {}
for w = 1, num() do weathers[w] = { arg(), arg() } end
local locations = {}
for l = 1, num() do locations[l] = { name = arg(), scope = scope() } end

local function merge_tweets(key, s)
  merge_scope(key, s.count, {}, { temperature_sum = s.temperature_sum, humidity_sum = s.humidity_sum },
    'temperature_min', s.temperature_min, 'temperature_max', s.temperature_max)
end

local function apply()
  merge_tweets(p .. 'tweets:total', total)
  for _, w in ipairs(weathers) do redis.call('HINCRBY', p .. 'tweets:weather', w[1], w[2]) end
  local counts = {}
  for _, l in ipairs(locations) do
    merge_tweets(p .. 'tweets:location:' .. l.name, l.scope)
    counts[#counts + 1] = { l.name, l.scope.count }
  end
  increment_scores(p .. 'tweets:locations', counts)
  return {}
end

return apply_batch('tweet', function() return nil end, apply)
