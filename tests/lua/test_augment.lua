-- test_augment.lua: augmentation in the data pipeline (issue 10, point 5).
-- ds:batches{augment = {shape, pad, flip}}: every image is one of the
-- (2 pad + 1)^2 shifts of its source, mirrored or not; the draws repeat
-- for the same (seed, epoch) and change with the epoch; the shuffle is the
-- same with and without; rt.distill refuses a teacher cache with augment
-- and otherwise runs the teacher on each augmented batch.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local C, H, W = 2, 4, 5
-- image i: value 100 i + 10 c + (row - 1) W + col, all distinct and > 0
local function images(n)
  local x, y = rt.zeros{ n, C * H * W }, rt.zeros({ n }, "i32")
  for i = 1, n do
    for c = 0, C - 1 do
      for r = 1, H do
        for q = 1, W do x:set(i, c * H * W + (r - 1) * W + q, 100 * i + 10 * c + (r - 1) * W + q) end
      end
    end
    y:set(i, i % 3)
  end
  return rt.dataset(x, y)
end

-- The transform of the source image src (a Lua array) shifted by (dy, dx)
-- with zeros outside, mirrored when m.
local function transform(src, dy, dx, m)
  local out = {}
  for c = 0, C - 1 do
    for r = 1, H do
      for q = 1, W do
        local qq = m and (W + 1 - q) or q
        local sr, sq = r + dy, qq + dx
        local v = 0
        if sr >= 1 and sr <= H and sq >= 1 and sq <= W then v = src[c * H * W + (sr - 1) * W + sq] end
        out[#out + 1] = v
      end
    end
  end
  return out
end

local function same(a, b)
  for k = 1, #a do if a[k] ~= b[k] then return false end end
  return #a == #b
end

local function collect(ds, opts)
  local rows, ids = {}, {}
  for x, _, idx in ds:batches(3, opts) do
    for i = 1, #x do
      rows[#rows + 1] = x:narrow(1, i, 1):reshape{ C * H * W }:totable()
      ids[#ids + 1] = idx:get(i)
    end
  end
  return rows, ids
end

T.test("augment: each image is a padded crop of its source, maybe mirrored; flips and shifts both occur", function()
  local ds = images(10)
  local aug = { shape = { C, H, W }, pad = 1, flip = true }
  local rows, ids = collect(ds, { shuffle = true, seed = 3, epoch = 0, augment = aug })
  local plain, pids = collect(ds, { shuffle = true, seed = 3, epoch = 0 })
  T.check(#rows == 10 and table.concat(ids, ",") == table.concat(pids, ","), "the same order as without augment")
  local mirrored, shifted = 0, 0
  for k = 1, #rows do
    local found
    for dy = -1, 1 do
      for dx = -1, 1 do
        for _, m in ipairs{ false, true } do
          if not found and same(rows[k], transform(plain[k], dy, dx, m)) then found = { dy, dx, m } end
        end
      end
    end
    T.check(found, "image " .. k .. " is a crop of its source")
    if found then
      if found[3] then mirrored = mirrored + 1 end
      if found[1] ~= 0 or found[2] ~= 0 then shifted = shifted + 1 end
    end
  end
  T.check(mirrored > 0 and mirrored < 10 and shifted > 0, ("mirrored %d, shifted %d of 10"):format(mirrored, shifted))
end)

T.test("augment: reproducible per (seed, epoch), another epoch other draws; pad 0 without flip is the identity", function()
  local ds = images(12)
  local aug = { shape = { C, H, W }, pad = 2 }
  local a = collect(ds, { shuffle = true, seed = 1, epoch = 4, augment = aug })
  local b = collect(ds, { shuffle = true, seed = 1, epoch = 4, augment = aug })
  local c = collect(ds, { shuffle = true, seed = 1, epoch = 5, augment = aug })
  local d = collect(ds, { shuffle = true, seed = 1, epoch = 5 })
  local ab, ac = true, true
  for k = 1, #a do ab = ab and same(a[k], b[k]); ac = ac and same(a[k], c[k]) end
  T.check(ab, "same seed and epoch: the same images")
  T.check(not ac, "another epoch: other crops")
  local e = collect(ds, { shuffle = true, seed = 1, epoch = 5, augment = { shape = { C, H, W }, pad = 0, flip = false } })
  local ident = true
  for k = 1, #d do ident = ident and same(d[k], e[k]) end
  T.check(ident, "pad 0, flip false changes nothing")
  local before = collect(ds, {})
  collect(ds, { augment = aug })
  local after, untouched = collect(ds, {}), true
  for k = 1, #before do untouched = untouched and same(before[k], after[k]) end
  T.check(untouched, "the dataset itself is untouched")
end)

T.test("augment: wrong shapes and pads are refused, naming the fix", function()
  local ds = images(4)
  T.raises(function() collect(ds, { augment = { shape = { 1, 4, 4 } } }) end, "needs f32 samples of 16 values",
    "samples of 40")
  T.raises(function() collect(ds, { augment = { shape = { C, H, W }, pad = 9 } }) end, "augment.pad = 9 must lie in [0, 4]")
  T.raises(function() collect(ds, { augment = { shape = { C, H } } }) end, "augment.shape must be {C, H, W}")
end)

T.test("rt.distill with augment: the cache is refused, the teacher runs on each augmented batch", function()
  local ds = images(20)
  local teacher = rt.teacher("model", { arch = "mlp", options = { sizes = { C * H * W, 3 } }, random_init = true })
  local student = rt.student("mlp", { sizes = { C * H * W, 3 } })
  local aug = { shape = { C, H, W }, pad = 1 }
  T.raises(function()
    rt.distill{ teacher = teacher, student = student, data = ds, loss = rt.loss("kd"), epochs = 1, batch = 5,
      quiet = true, augment = aug, cache_teacher = true }
  end, "cache_teacher = true with augment", "leave cache_teacher out")
  local r = rt.distill{ teacher = teacher, student = student, data = ds, loss = rt.loss("kd"), epochs = 2,
    batch = 5, quiet = true, augment = aug }
  T.check(r and #r.history == 2, "two epochs ran")
  local r2 = rt.distill{ teacher = teacher, student = rt.student("mlp", { sizes = { C * H * W, 3 } }), data = ds,
    loss = rt.loss("kd"), epochs = 2, batch = 5, quiet = true, augment = aug }
  local function kd(res) return res.history[2].train.kd end
  T.check(type(kd(r)) == "number" and kd(r) == kd(r2), ("reproducible: %s vs %s"):format(kd(r), kd(r2)))
  local r3 = rt.distill{ teacher = teacher, student = rt.student("mlp", { sizes = { C * H * W, 3 } }), data = ds,
    loss = rt.loss("kd"), epochs = 2, batch = 5, quiet = true }
  T.check(kd(r) ~= kd(r3), ("augmented training differs from plain: %s vs %s"):format(kd(r), kd(r3)))
end)

T.done("test_augment.lua")
