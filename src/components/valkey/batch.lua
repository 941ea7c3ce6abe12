-- Folds one event into an aggregate hash: `count`, the sums in `deltas`, and the
-- min/max of `x` in the fields `min` and `max`.
local function accumulate(s, x, min, max, deltas)
  if s.count == 0 then
    s[min] = x
    s[max] = x
    for f in pairs(deltas) do s[f] = 0 end
  else
    if x < s[min] then s[min] = x end
    if x > s[max] then s[max] = x end
  end
  s.count = s.count + 1
  for f, d in pairs(deltas) do s[f] = s[f] + d end
end

-- Applies the batch of `kind`: `apply(b)` for each event whose id is new within
-- the window (`b` = the index in ARGV of its first value after the id hash), then
-- writes the touched aggregates once. Returns one '1' (applied) or '0' (duplicate)
-- per event.
local function apply_batch(kind, int_fields, float_fields, apply)
  local n = (#ARGV - HEAD) / WIDTH
  local hashes = {}
  for i = 1, n do hashes[i] = ARGV[HEAD + (i - 1) * WIDTH + 1] end
  local fresh = fresh_ids(kind, hashes)
  local flags = {}
  for i = 1, n do
    if fresh[i] then
      flags[i] = '1'
      apply(HEAD + (i - 1) * WIDTH + 2)
    else
      flags[i] = '0'
    end
  end
  flush_sums(int_fields, float_fields)
  flush_counters()
  return table.concat(flags)
end
