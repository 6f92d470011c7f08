-- test_semi.lua: semi-supervised data (issue 10's data distillation).
-- ds:keep_labels keeps n labels and marks the rest -1; rt.label_mask; a
-- term that needs labels sees only the labelled rows (its step equals a
-- step on the labelled rows alone), is skipped on a batch without labels,
-- and terms on the teacher's signal see every sample; bad labels and
-- label-less runs are refused with a message; the manifest records which
-- labels were kept.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

-- n samples of 4 features, 3 classes
local function data(n, seed)
  local x, y = rt.zeros{ n, 4 }, rt.zeros({ n }, "i32")
  for i = 1, n do
    for j = 1, 4 do x:set(i, j, math.sin(i * 12.9898 + j * 78.233 + (seed or 1) * 3.7)) end
    y:set(i, (i * 7) % 3)
  end
  return rt.dataset(x, y)
end

local function count_unlabelled(y)
  local c = 0
  for i = 1, y:size(1) do if y:get(i) == -1 then c = c + 1 end end
  return c
end

T.test("keep_labels: n labels kept, the rest -1; the labelled-only subset; names; determinism", function()
  local ds = data(50):name("toy")
  local all, only = ds:keep_labels{ n = 12, seed = 3 }
  T.check(all:size() == 50 and only:size() == 12, ("sizes %d, %d"):format(all:size(), only:size()))
  T.check(count_unlabelled(all:y()) == 38, "38 unlabelled, got " .. count_unlabelled(all:y()))
  T.check(count_unlabelled(ds:y()) == 0, "the source keeps its labels")
  -- the labelled rows of `all` are exactly `only`'s, with their labels, in order
  local k = 0
  for i = 1, 50 do
    if all:y():get(i) ~= -1 then
      k = k + 1
      T.check(all:y():get(i) == ds:y():get(i), "a kept label is the source's")
      T.check(only:x():get(k, 1) == ds:x():get(i, 1) and only:y():get(k) == ds:y():get(i), "only row " .. k)
    end
  end
  T.check(k == 12, "12 labelled rows")
  T.check(all:name() == "toy:12-labelled" and only:name() == "toy:12-labelled-only", all:name() .. ", " .. only:name())
  local again = ds:keep_labels{ n = 12, seed = 3 }
  local other = ds:keep_labels{ n = 12, seed = 4 }
  local same, differ = true, false
  for i = 1, 50 do
    same = same and again:y():get(i) == all:y():get(i)
    differ = differ or other:y():get(i) ~= all:y():get(i)
  end
  T.check(same and differ, "the same seed draws the same labels, another seed others")
  local p = rt.data_provenance(all)
  T.check(p.labels and p.labels.kept == 12 and p.labels.of == 50 and #p.labels.ids_sha256 == 64,
    "provenance records the kept labels")
end)

T.test("keep_labels: bad arguments are refused with what to give", function()
  local ds = data(10)
  T.raises(function() ds:keep_labels{ n = 0 } end, "'n' must be an integer in [1, 10]")
  T.raises(function() ds:keep_labels{ n = 3, seeds = 1 } end, "seeds")
  T.raises(function() rt.dataset(rt.zeros{ 3, 2 }):keep_labels{ n = 1 } end, "no labels")
end)

T.test("label_mask: 1 where labelled, the count; reuses its buffer", function()
  local y = rt.tensor({ 2, -1, 0, -1, 1 }, "i32")
  local m, c = rt.label_mask(y)
  T.check(c == 3, "count " .. c)
  T.check(m:get(1) == 1 and m:get(2) == 0 and m:get(3) == 1 and m:get(4) == 0 and m:get(5) == 1, "mask values")
  local m2 = rt.label_mask(y, m)
  T.check(m2 == m, "the buffer is reused")
end)

-- One SGD step on the whole batch: CE on the semi-supervised data must
-- move the weights as CE on the labelled rows alone (mean over them).
T.test("a term with labels sees only the labelled rows: one step equals the labelled-only step", function()
  local ds = data(40, 5)
  local all, only = ds:keep_labels{ n = 9, seed = 2 }
  local function one_step(d)
    local s = rt.student("mlp", { sizes = { 4, 8, 3 }, seed = 7 })
    rt.fit{ student = s, data = d, epochs = 1, batch = d:size(), optimizer = rt.optim.sgd{ lr = 0.5 },
            schedule = function() return 0.5 end, quiet = true }
    return s:forward(ds:x(), false)
  end
  local za, zo = one_step(all), one_step(only)
  local z0 = rt.student("mlp", { sizes = { 4, 8, 3 }, seed = 7 }):forward(ds:x(), false)
  local maxd, moved = 0, 0
  for i = 1, 40 do
    for j = 1, 3 do
      maxd = math.max(maxd, math.abs(za:get(i, j) - zo:get(i, j)))
      moved = math.max(moved, math.abs(za:get(i, j) - z0:get(i, j)))
    end
  end
  T.check(moved > 1e-3, "the step moved the outputs by " .. moved)
  T.check(maxd < 1e-5, "semi-supervised vs labelled-only step: max difference " .. maxd)
end)

T.test("batches without a label skip the labelled term; KD sees every sample", function()
  local ds = data(30, 9)
  local all = ds:keep_labels{ n = 1, seed = 1 }
  local teacher_net = rt.student("mlp", { sizes = { 4, 16, 3 }, seed = 1 })
  rt.fit{ student = teacher_net, data = ds, epochs = 3, batch = 10, quiet = true }
  local teacher = rt.teacher(teacher_net)
  local s = rt.student("mlp", { sizes = { 4, 8, 3 }, seed = 2 })
  local run = rt.distill{ teacher = teacher, student = s, data = all, epochs = 2, batch = 3, quiet = true,
                          loss = { { rt.loss("kd"), 0.5 }, { rt.loss("ce"), 0.5 } } }
  for _, row in ipairs(run.history) do
    for _, k in ipairs{ "kd", "ce" } do
      local v = row.train[k]
      T.check(v and v == v and v < math.huge, ("finite epoch %s %s"):format(k, tostring(v)))
    end
  end
  -- KD alone never needs a label: a run on data with no label at all
  local none = rt.dataset(ds:x(), rt.full({ 30 }, -1, "i32"))
  local s2 = rt.student("mlp", { sizes = { 4, 8, 3 }, seed = 2 })
  local before = s2:forward(ds:x(), false):get(1, 1)
  rt.distill{ teacher = teacher, student = s2, data = none, epochs = 1, batch = 10, quiet = true,
              loss = { { rt.loss("kd"), 1 } } }
  T.check(s2:forward(ds:x(), false):get(1, 1) ~= before, "KD trained the student on unlabelled data")
end)

T.test("refused: labels below -1, and a labelled term on data without labels", function()
  local ds = data(10)
  local bad = rt.dataset(ds:x(), rt.full({ 10 }, -2, "i32"))
  local s = rt.student("mlp", { sizes = { 4, 8, 3 }, seed = 2 })
  T.raises(function() rt.fit{ student = s, data = bad, epochs = 1, quiet = true } end,
    "negative label (-2)", "-1 for an unlabelled sample")
  local none = rt.dataset(ds:x(), rt.full({ 10 }, -1, "i32"))
  T.raises(function() rt.fit{ student = s, data = none, epochs = 1, quiet = true } end,
    "has no labels", "keep_labels")
end)

T.done("test_semi")
