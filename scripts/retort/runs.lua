-- runs.lua: several run folders read as one, for `retort report DIR...`
-- and `retort compare DIR...`.
--
-- rt.report.load_many(dirs) -> the summary report.lua draws, with a model
-- per run (or per summary.json entry) of every folder, in the order given.
-- Names are made unique (a repeated name gets its folder's name in front),
-- so colours, chart ids and legends tell the runs apart.
--
-- rt.report.describe(m) -> { recipe = "fashion_mnist/kd",
--   model = "mlp 784-128-10", data = "...", teacher = "..." }: how a
-- person tells runs apart (the recipe's file name and the run's name, the
-- student plugin and its layer sizes).
--
-- rt.report.mismatches(models) -> a list of warnings, each
-- { what = "...", runs = { {label, value}, ... } }: models whose figures
-- were computed on different evaluation data, or whose agreement, KL and JS
-- were measured against different teachers, do not compare.
local rt = ...
local M = rt.report

local function basename(p) return (tostring(p):gsub("/+$", ""):match("([^/]*)$")) end

local function sizes_text(opts)
  local s = type(opts) == "table" and opts.sizes
  if type(s) ~= "table" or #s == 0 then return nil end
  local t = {}
  for i, v in ipairs(s) do t[i] = tostring(math.tointeger(v) or v) end
  return table.concat(t, "-")
end

-- The identity of a dataset's provenance: its name, size and file hashes.
local function data_key(d)
  if type(d) ~= "table" then return nil end
  local h = {}
  for _, f in ipairs(d.files or {}) do h[#h + 1] = tostring(f.sha256 or f.path) end
  return ("%s|%s|%s"):format(tostring(d.name), tostring(d.samples), table.concat(h, ","))
end

local function data_text(d)
  if type(d) ~= "table" then return "unknown data" end
  local h = {}
  for _, f in ipairs(d.files or {}) do h[#h + 1] = f.sha256 and tostring(f.sha256):sub(1, 12) or "?" end
  return ("%s, %s samples%s"):format(tostring(d.name), tostring(d.samples),
    #h > 0 and (", sha256 " .. table.concat(h, " ")) or "")
end

-- A teacher's identity: its checkpoint's hash when it has one, else its
-- plugin and options.
local function teacher_key(p)
  if type(p) ~= "table" then return nil end
  if p.sha256 then return "sha256:" .. tostring(p.sha256) end
  return tostring(p.plugin) .. " " .. rt.json_encode(p.options or {})
end

local function teacher_text(p)
  if type(p) ~= "table" then return "none" end
  if p.sha256 then
    return ("%s (sha256 %s)"):format(tostring(p.checkpoint or p.plugin), tostring(p.sha256):sub(1, 12))
  end
  return tostring(p.plugin) .. " " .. rt.json_encode(p.options or {})
end

function M.describe(m)
  local man = m.rundata and m.rundata.manifest
  local recipe, model = nil, nil
  if type(man) == "table" then
    local r = type(man.recipe) == "table" and man.recipe.path
    recipe = (r and basename(r):gsub("%.lua$", "") or "(no recipe)") .. "/" .. tostring(man.name or m.name)
    local st = man.student
    if type(st) == "table" then
      model = tostring(st.plugin) .. (sizes_text(st.options) and (" " .. sizes_text(st.options)) or "")
    end
  end
  return { recipe = recipe or tostring(m.name), model = model, data = data_text(m.eval_data),
           teacher = teacher_text(m.eval_teacher) }
end

-- "recipe/name (model)" for warnings.
function M.label(m)
  local d = M.describe(m)
  return d.recipe .. (d.model and (" (" .. d.model .. ")") or "")
end

function M.mismatches(models)
  local out = {}
  local function check(what, key, text)
    local seen, n, runs = {}, 0, {}
    for _, m in ipairs(models) do
      local k = key(m)
      if k then
        if not seen[k] then seen[k] = true n = n + 1 end
        runs[#runs + 1] = { M.label(m) .. (m.source and (" in " .. m.source) or ""), text(m) }
      end
    end
    if n > 1 then out[#out + 1] = { what = what, runs = runs } end
  end
  check("the runs were evaluated on different data, so their figures do not compare",
    function(m) return data_key(m.eval_data) end, function(m) return data_text(m.eval_data) end)
  check("agreement, KL and JS were measured against different teachers",
    function(m) return teacher_key(m.eval_teacher) end, function(m) return teacher_text(m.eval_teacher) end)
  return out
end

-- The warnings as lines of text, for the terminal.
function M.mismatch_lines(warnings)
  local lines = {}
  for _, w in ipairs(warnings) do
    lines[#lines + 1] = "warning: " .. w.what .. ":"
    for _, r in ipairs(w.runs) do lines[#lines + 1] = ("  %s: %s"):format(r[1], r[2]) end
  end
  return lines
end

function M.load_many(dirs)
  if #dirs == 1 then return M.load(dirs[1]) end
  local s = { models = {}, runs = {} }
  local count = {}
  for _, dir in ipairs(dirs) do
    local one = M.load(dir)
    s.runs[#s.runs + 1] = { dir = dir, title = one.title, models = one.models }
    for _, m in ipairs(one.models) do
      m.source = dir
      s.models[#s.models + 1] = m
      count[m.name] = (count[m.name] or 0) + 1
    end
  end
  -- unique names: a repeated one becomes the shortest tail of its run
  -- folder's path that no other repeated one shares ("a/kd", "b/kd"), with
  -- the name after it when the tail does not end with it
  local folder, dup = {}, {}
  for _, m in ipairs(s.models) do
    folder[m] = (m.rundata and m.rundata.dir or m.source):gsub("/%.$", "")
    if count[m.name] > 1 then dup[#dup + 1] = m end
  end
  local function tail(path, n)
    local parts = {}
    for p in path:gmatch("[^/]+") do parts[#parts + 1] = p end
    return table.concat(parts, "/", math.max(1, #parts - n + 1)), n >= #parts
  end
  for _, m in ipairs(dup) do
    local n, t, whole = 1, nil, false
    repeat
      t, whole = tail(folder[m], n)
      local clash = false
      for _, o in ipairs(dup) do
        if o ~= m and tail(folder[o], n) == t then clash = true end
      end
      n = n + 1
    until not clash or whole
    m.label = (t == m.name or t:sub(-#m.name - 1) == "/" .. m.name) and t or (t .. ": " .. m.name)
  end
  local used = {}
  for _, m in ipairs(s.models) do
    local name = m.label or m.name
    m.label = nil
    local k, base = 1, name
    while used[name] do
      k = k + 1
      name = ("%s (%d)"):format(base, k)
    end
    used[name] = true
    m.name = name
  end
  -- one eval data for the whole page only when every run shares it
  local key, same = nil, true
  for _, m in ipairs(s.models) do
    local k = data_key(m.eval_data)
    if key == nil then key = k elseif k ~= key then same = false end
  end
  if same then s.eval_data = s.models[1].eval_data end
  local names = {}
  for _, r in ipairs(s.runs) do names[#names + 1] = #r.models == 1 and r.models[1].name or basename(r.dir) end
  s.title = ("%d runs: %s"):format(#dirs, table.concat(names, ", "))
  s.warnings = M.mismatches(s.models)
  -- described before the page escapes it: cutting a hash short must not
  -- split an entity
  for _, m in ipairs(s.models) do m.about = M.describe(m) end
  return s
end
