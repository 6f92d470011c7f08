-- cmd_compare.lua: retort compare RUN_DIR... [--markdown]
-- One table of final metrics side by side: a row per model, from each
-- folder's summary.json (several models) or manifest.json + eval.json (one
-- run), each named by its folder, its recipe and run name, and its student
-- (plugin and layer sizes).  Columns no row has a value for are left out.
-- Models evaluated on different data, or measured against different
-- teachers, are named in warnings on stderr (runs.lua).  --markdown prints a
-- Markdown table instead of aligned text.  "data" names the dataset the
-- figures were measured on (the run's eval data, e.g. fashion-mnist/test).
local rt = ...
local f = nil

local HEADERS = { "run", "recipe", "model", "data", "acc %", "top-5 %", "agree %", "KL(t||s)", "JS", "ECE %", "params",
                  "FLOPs", "disk", "p50 us", "p95 us", "runs", "speed-up", "compress" }

local function rows_of(dir, models)
  f = f or rt.report.format
  local s = rt.report.load(dir)
  local data = s.eval_data and s.eval_data.name or "-"
  local rows = {}
  local function p(v) return type(v) == "number" and ("%.2f"):format(100 * v) or "-" end
  local function n(v, d) return type(v) == "number" and ("%." .. d .. "f"):format(v) or "-" end
  for _, m in ipairs(s.models) do
    m.source = dir
    models[#models + 1] = m
    local e, z, l = m.eval or {}, m.size or {}, m.latency
    local d = rt.report.describe(m)
    rows[#rows + 1] = {
      dir, d.recipe, d.model or "-", data, p(e.accuracy), p(e.top5), p(e.agreement), n(e.kl, 4), n(e.js, 4), p(e.ece),
      type(z.params) == "number" and math.tointeger(z.params) or "-",
      type(z.flops) == "number" and (f.si(z.flops, ""):gsub(" $", "")) or "-",
      type(z.disk_bytes) == "number" and f.bytes(z.disk_bytes) or "-", l and n(l.p50_ms * 1e3, 1) or "-", l and n(l.p95_ms * 1e3, 1) or "-",
      l and math.tointeger(l.runs) or "-",
      m.speedup and ("%.1fx"):format(m.speedup) or "-", m.compression and ("%.1fx"):format(m.compression) or "-",
    }
  end
  return rows
end

-- Headers and rows without the columns that hold "-" in every row.
local function drop_empty(headers, rows)
  local keep = {}
  for j = 1, #headers do
    for _, r in ipairs(rows) do
      if r[j] ~= "-" and r[j] ~= nil then keep[#keep + 1] = j break end
    end
  end
  local h, out = {}, {}
  for k, j in ipairs(keep) do h[k] = headers[j] end
  for i, r in ipairs(rows) do
    out[i] = {}
    for k, j in ipairs(keep) do out[i][k] = r[j] end
  end
  return h, out
end

rt.command{
  name = "compare", usage = "compare RUN_DIR...", help = "side-by-side table of runs' final metrics (--markdown)",
  run = function(args)
    local dirs, markdown = {}, false
    for _, a in ipairs(args) do
      if a == "--markdown" then markdown = true
      elseif a == "--help" or a == "-h" then
        print("usage: retort compare RUN_DIR... [--markdown]")
        return 0
      elseif a:match("^%-%-") then error("unknown option " .. a .. " (--markdown)", 0)
      else dirs[#dirs + 1] = (a:gsub("/+$", "")) end
    end
    if #dirs == 0 then error("needs at least one run folder", 0) end
    local rows, models = {}, {}
    for _, d in ipairs(dirs) do
      for _, r in ipairs(rows_of(d, models)) do rows[#rows + 1] = r end
    end
    for _, line in ipairs(rt.report.mismatch_lines(rt.report.mismatches(models))) do
      io.stderr:write(line:match("^warning") and "retort compare: " or "", line, "\n")
    end
    local headers, shown = drop_empty(HEADERS, rows)
    print(rt.util.format_table(headers, shown, markdown))
    return 0
  end,
}
