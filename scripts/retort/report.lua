-- report.lua: report.html, the page a person looks at after a run.
--
-- rt.report(dir [, {out = path, title = "..."}]) -> path of the page.
-- dir is either a run folder (manifest.json, metrics.jsonl, eval.json: one
-- model) or a folder with summary.json (rt.summarize: several models side
-- by side, each naming its run sub-folder), or a list of such folders:
-- one page for all of them (runs.lua; `out` is then required).
-- Everything read from the folders is escaped once, in M.html (see
-- `escaped`), never by the drawing code.  The page is one file: inline
-- CSS and SVG, no script, no font or image from anywhere, so it opens
-- offline and makes no network request (tests/check_report.sh proves it in
-- Chromium).
--
-- Every chart is <figure class="chart"><svg>...<g class="marks">...</g>
-- </svg></figure>: its data are drawn in colour inside .marks, axes, grid
-- and text in neutral greys, legends outside the SVG.  The Chromium check
-- relies on that split to tell a drawn chart from an empty frame.
-- It is longer than 800 lines because every drawing function sits beside
-- the one escaping rule (M.html) it must keep.
local rt = ...
local util = rt.util

local M = {}

-- ------------------------------------------------------------- loading

local function read_json(path)
  local s = util.read_file(path)
  if not s then return nil end
  local ok, v = pcall(rt.json_decode, s)
  if not ok then error(("rt.report: %s is not JSON: %s"):format(path, util.strip_position(tostring(v))), 0) end
  return v
end

local function read_jsonl(path)
  local f = io.open(path, "r")
  if not f then return {} end
  local rows = {}
  for line in f:lines() do
    if line:match("%S") then
      local ok, v = pcall(rt.json_decode, line)
      if ok then rows[#rows + 1] = v end -- a torn last line of a killed run is skipped
    end
  end
  f:close()
  return rows
end

local function load_run(dir)
  local r = { dir = dir, manifest = read_json(dir .. "/manifest.json"), steps = {}, epochs = {} }
  for _, row in ipairs(read_jsonl(dir .. "/metrics.jsonl")) do
    if row.event == "step" then r.steps[#r.steps + 1] = row
    elseif row.event == "epoch" then r.epochs[#r.epochs + 1] = row end
  end
  r.eval = read_json(dir .. "/eval.json")
  -- samples.json (language models): { {prompt =, text =, settings =}, ... }
  -- as a recipe wrote them; shown as text, escaped like every value
  local samples = read_json(dir .. "/samples.json")
  if type(samples) == "table" then r.samples = samples end
  return r
end

-- The summary of dir: summary.json as written, or one made from a run
-- folder's manifest and eval.json.
function M.load(dir)
  local s = read_json(dir .. "/summary.json")
  if s then
    for _, m in ipairs(s.models) do
      if m.run then m.rundata = load_run(dir .. "/" .. m.run) end
      -- what this model's figures were measured on (runs.lua compares them)
      m.eval_data = s.eval_data
      if m.name ~= s.teacher then m.eval_teacher = s.eval_teacher end
    end
    return s
  end
  local run = load_run(dir)
  if not run.manifest then
    error(("rt.report: %s has neither summary.json nor manifest.json (not a run folder)"):format(dir), 0)
  end
  local man = run.manifest
  local e = run.eval or man.result or {}
  local name = man.name or "model"
  local m = { name = name, role = man.teacher and "student" or "model", run = ".", rundata = run, eval = e,
              eval_data = man.data and man.data.eval, eval_teacher = man.eval_teacher or man.teacher,
              size = { params = man.student and man.student.params, flops = man.student and man.student.flops,
                       disk_bytes = rt.file_size(dir .. "/best.safetensors") } }
  return { title = name, created = man.finished or man.started, models = { m },
           eval_data = man.data and man.data.eval }
end

-- ------------------------------------------------------------ formatting

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;",
                                         ["'"] = "&#39;" }))
end

-- The one place values from files enter the page: M.html renders a copy
-- of the summary in which every string, key or value, at any depth, has
-- been through esc.  The drawing code below therefore interpolates what it
-- is given as is, in text, attributes and ids alike, and must not escape
-- again; its own literals contain no markup characters.
local function escaped(v, seen)
  if type(v) == "string" then return esc(v) end
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[escaped(k, seen)] = escaped(x, seen) end
  return c
end
M.escaped = escaped

-- An id from a (escaped) name: letters, digits, '_', '.' and '-'; each
-- other byte becomes '-'.
local function slug(s) return (tostring(s):gsub("[^%w_.%-]", "-")) end

local function num(v, digits)
  if type(v) ~= "number" then return "–" end
  return ("%." .. (digits or 3) .. "f"):format(v)
end

local function pct(v, digits) return type(v) == "number" and (num(100 * v, digits or 2) .. "%") or "–" end

local function int(v)
  if type(v) ~= "number" then return "–" end
  local s = ("%d"):format(math.floor(v + 0.5))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end

local function si(v, unit)
  if type(v) ~= "number" then return "–" end
  local a = math.abs(v)
  if a >= 1e9 then return ("%.2f G%s"):format(v / 1e9, unit) end
  if a >= 1e6 then return ("%.2f M%s"):format(v / 1e6, unit) end
  if a >= 1e3 then return ("%.1f k%s"):format(v / 1e3, unit) end
  return ("%g %s"):format(v, unit)
end

local function bytes(v)
  if type(v) ~= "number" then return "–" end
  if v >= 2 ^ 20 then return ("%.2f MiB"):format(v / 2 ^ 20) end
  if v >= 2 ^ 10 then return ("%.1f KiB"):format(v / 2 ^ 10) end
  return ("%d B"):format(v)
end

local function times(v) return type(v) == "number" and ("%.1f×"):format(v) or "–" end

M.format = { esc = esc, num = num, pct = pct, int = int, si = si, bytes = bytes, times = times }

-- ---------------------------------------------------------------- colours

-- Models: teacher blue, baseline orange, students green then others.  Loss
-- terms get their own palette.  All saturated: the Chromium check counts
-- saturated pixels as marks.
local ROLE_COLOURS = { teacher = "#3b6fb6", baseline = "#e8862a" }
local STUDENT_COLOURS = { "#2f9e5b", "#c23b8a", "#7a52c7", "#1f9fb0", "#b8860b", "#d9463b", "#5a8f00", "#8c564b" }
local TERM_COLOURS = { "#d9463b", "#2b8cbe", "#8c6bb1", "#e69a00", "#1a9850", "#c51b7d" }

local function model_colours(models)
  local c, k, taken = {}, 0, {}
  for _, m in ipairs(models) do
    -- a role's colour goes to its first model: several runs on one page
    -- each keep a colour of their own
    if ROLE_COLOURS[m.role] and not taken[m.role] then
      c[m.name] = ROLE_COLOURS[m.role]
      taken[m.role] = true
    else
      k = k + 1
      c[m.name] = STUDENT_COLOURS[(k - 1) % #STUDENT_COLOURS + 1]
    end
  end
  return c
end

-- ---------------------------------------------------------------- charts

-- Ticks at 1, 2 or 5 x 10^k covering [lo, hi], about n of them.
local function ticks(lo, hi, n)
  if hi <= lo then hi = lo + 1 end
  local raw = (hi - lo) / (n or 5)
  local mag = 10 ^ math.floor(math.log(raw, 10))
  local step = mag
  for _, m in ipairs{ 1, 2, 2.5, 5, 10 } do
    if m * mag >= raw then step = m * mag break end
  end
  local t, v = {}, math.ceil(lo / step - 1e-9) * step
  while v <= hi + step * 1e-9 do
    t[#t + 1] = v
    v = v + step
  end
  return t, step
end

local function tick_label(v, step)
  if step >= 1 then return ("%d"):format(math.floor(v + 0.5)) end
  local d = math.max(0, math.ceil(-math.log(step, 10) - 1e-9))
  return ("%." .. d .. "f"):format(v)
end

local W, H = 560, 300
local PAD = { l = 58, r = 16, t = 14, b = 44 }

local function svg_open(w, h, label)
  return ('<svg viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s" '
    .. 'xmlns="http://www.w3.org/2000/svg">'):format(w, h, w, h, tostring(label))
end

-- Axes with grid lines; returns the svg text and the two scale functions.
local function axes(o)
  local x0, x1, y0, y1 = o.xlim[1], o.xlim[2], o.ylim[1], o.ylim[2]
  if x1 <= x0 then x1 = x0 + 1 end
  if y1 <= y0 then y1 = y0 + 1 end
  local pl, pr, pt, pb = PAD.l, W - PAD.r, PAD.t, H - PAD.b
  local function sx(v) return pl + (v - x0) * (pr - pl) / (x1 - x0) end
  local function sy(v) return pb - (v - y0) * (pb - pt) / (y1 - y0) end
  local out = {}
  local yt, ys = ticks(y0, y1, 5)
  for _, v in ipairs(yt) do
    if v >= y0 - 1e-12 and v <= y1 + 1e-12 then
      out[#out + 1] = ('<line class="gl" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'):format(pl, pr, sy(v), sy(v))
      out[#out + 1] = ('<text class="tick" x="%.1f" y="%.1f" text-anchor="end">%s</text>'):format(pl - 6,
        sy(v) + 4, (o.yfmt or tick_label)(v, ys))
    end
  end
  local xt, xs = ticks(x0, x1, o.xticks or 6)
  if o.xint and xs < 1 then xt, xs = ticks(x0, x1, math.max(1, math.floor(x1 - x0))) end
  for _, v in ipairs(xt) do
    if v >= x0 - 1e-12 and v <= x1 + 1e-12 then
      out[#out + 1] = ('<line class="tickmark" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'):format(sx(v), sx(v), pb,
        pb + 4)
      out[#out + 1] = ('<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>'):format(sx(v), pb + 17,
        (o.xfmt or tick_label)(v, xs))
    end
  end
  out[#out + 1] = ('<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'):format(pl, pr, pb, pb)
  out[#out + 1] = ('<line class="axis" x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f"/>'):format(pl, pl, pt, pb)
  if o.xlabel then
    out[#out + 1] = ('<text class="label" x="%.1f" y="%d" text-anchor="middle">%s</text>'):format((pl + pr) / 2,
      H - 6, tostring(o.xlabel))
  end
  if o.ylabel then
    out[#out + 1] = ('<text class="label" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>')
      :format((pt + pb) / 2, tostring(o.ylabel))
  end
  return table.concat(out), sx, sy
end

local function legend(items)
  local out = { '<div class="legend">' }
  for _, it in ipairs(items) do
    out[#out + 1] = ('<span><i style="background:%s%s"></i>%s</span>'):format(it.colour,
      it.dash and ";background:repeating-linear-gradient(90deg," .. it.colour .. " 0 5px,transparent 5px 8px)" or "",
      tostring(it.label))
  end
  out[#out + 1] = "</div>"
  return table.concat(out)
end

local function figure(id, title, body, note, legend_html)
  return ('<figure class="chart" id="chart-%s"><figcaption>%s</figcaption>%s%s%s</figure>'):format(slug(id), tostring(title),
    legend_html or "", body, note and ('<p class="note">' .. note .. "</p>") or "")
end

-- series = { {label, colour, points = {{x, y}, ...}, dash, dots}, ... }
local function line_chart(o)
  local xmin, xmax, ymin, ymax = math.huge, -math.huge, math.huge, -math.huge
  for _, s in ipairs(o.series) do
    for _, p in ipairs(s.points) do
      xmin, xmax = math.min(xmin, p[1]), math.max(xmax, p[1])
      ymin, ymax = math.min(ymin, p[2]), math.max(ymax, p[2])
    end
  end
  for _, h in ipairs(o.hlines or {}) do ymin, ymax = math.min(ymin, h.y), math.max(ymax, h.y) end
  if xmin == math.huge then xmin, xmax, ymin, ymax = 0, 1, 0, 1 end
  if ymax - ymin < 1e-6 * math.max(1, math.abs(ymax)) then -- one value: a visible band around it
    local d = math.max(0.5, 0.1 * math.abs(ymax))
    ymin, ymax = ymin - d, ymax + d
  end
  if o.ylim then ymin, ymax = o.ylim[1] or ymin, o.ylim[2] or ymax
  else
    local padv = (ymax - ymin) * 0.06 + 1e-9
    ymin, ymax = ymin - padv, ymax + padv
  end
  local yt = ticks(ymin, ymax, 5)
  ymin, ymax = math.min(ymin, yt[1]), math.max(ymax, yt[#yt])
  local ax, sx, sy = axes{ xlim = { o.xmin or xmin, o.xmax or xmax }, ylim = { ymin, ymax }, xlabel = o.xlabel,
                           ylabel = o.ylabel, yfmt = o.yfmt, xint = o.xint }
  local out = { svg_open(W, H, o.title), ax, '<g class="marks">' }
  for _, h in ipairs(o.hlines or {}) do
    out[#out + 1] = ('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2" '
      .. 'stroke-dasharray="6 4"/>'):format(PAD.l, W - PAD.r, sy(h.y), sy(h.y), h.colour)
  end
  for _, s in ipairs(o.series) do
    local pts = {}
    for _, p in ipairs(s.points) do pts[#pts + 1] = ("%.1f,%.1f"):format(sx(p[1]), sy(p[2])) end
    if #pts > 0 then
      out[#out + 1] = ('<polyline fill="none" stroke="%s" stroke-width="2.2" stroke-linejoin="round" %s points="%s"/>')
        :format(s.colour, s.dash and 'stroke-dasharray="7 4"' or "", table.concat(pts, " "))
      if s.dots or #pts == 1 then
        for _, p in ipairs(s.points) do
          out[#out + 1] = ('<circle cx="%.1f" cy="%.1f" r="3.2" fill="%s"/>'):format(sx(p[1]), sy(p[2]), s.colour)
        end
      end
    end
  end
  out[#out + 1] = "</g></svg>"
  local items = {}
  for _, s in ipairs(o.series) do items[#items + 1] = { label = s.label, colour = s.colour, dash = s.dash } end
  for _, h in ipairs(o.hlines or {}) do items[#items + 1] = { label = h.label, colour = h.colour, dash = true } end
  return figure(o.id, o.title, table.concat(out), o.note, legend(items))
end

-- Horizontal bars: items = { {label, value, colour, whisker = hi, text} }.
local function bar_chart(o)
  local n = #o.items
  local rowh = 34
  local h = PAD.t + n * rowh + 40
  local lw = 120
  local vmax = 0
  for _, it in ipairs(o.items) do vmax = math.max(vmax, it.whisker or it.value or 0) end
  if vmax <= 0 then vmax = 1 end
  local t, step = ticks(0, vmax * 1.05, 5)
  vmax = t[#t]
  local x0, x1 = lw, W - 150
  local function sx(v) return x0 + v * (x1 - x0) / vmax end
  local out = { svg_open(W, h, o.title) }
  local bottom = PAD.t + n * rowh
  for _, v in ipairs(t) do
    out[#out + 1] = ('<line class="gl" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>'):format(sx(v), sx(v), PAD.t, bottom)
    out[#out + 1] = ('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(sx(v), bottom + 16,
      (o.tickfmt or tick_label)(v, step))
  end
  if o.xlabel then
    out[#out + 1] = ('<text class="label" x="%.1f" y="%d" text-anchor="middle">%s</text>'):format((x0 + x1) / 2,
      h - 4, tostring(o.xlabel))
  end
  out[#out + 1] = '<g class="marks">'
  for i, it in ipairs(o.items) do
    local y = PAD.t + (i - 1) * rowh + 6
    out[#out + 1] = ('<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="3" fill="%s"/>'):format(x0, y,
      math.max(sx(it.value or 0) - x0, 1), rowh - 12, it.colour)
    if it.whisker then
      local cy = y + (rowh - 12) / 2
      out[#out + 1] = ('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'):format(
        sx(it.value), sx(it.whisker), cy, cy, it.colour)
      out[#out + 1] = ('<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'):format(
        sx(it.whisker), sx(it.whisker), cy - 7, cy + 7, it.colour)
    end
  end
  out[#out + 1] = "</g>"
  for i, it in ipairs(o.items) do
    local y = PAD.t + (i - 1) * rowh + 6 + (rowh - 12) / 2 + 4
    out[#out + 1] = ('<text class="barlabel" x="%d" y="%.1f" text-anchor="end">%s</text>'):format(lw - 8, y,
      tostring(it.label))
    -- the value after the bar, or inside a long bar where it would not fit
    local xe = sx(it.value or 0)
    if xe > x0 + 0.62 * (x1 - x0) then
      out[#out + 1] = ('<text class="value inside" x="%.1f" y="%.1f" text-anchor="end">%s</text>'):format(xe - 8, y,
        tostring(it.text or ""))
    else
      out[#out + 1] = ('<text class="value" x="%.1f" y="%.1f">%s</text>'):format(sx(it.whisker or it.value or 0) + 6,
        y, tostring(it.text or ""))
    end
  end
  out[#out + 1] = ('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>'):format(x0, x0, PAD.t, bottom)
  out[#out + 1] = "</svg>"
  return figure(o.id, o.title, table.concat(out), o.note)
end

-- Confusion matrix heatmap; colour by the row's share (recall), so rows of
-- different sizes read alike; the count is written in each cell.
local function heatmap(o)
  local cm, C = o.matrix, #o.matrix
  local cell = math.min(34, math.floor(300 / C))
  local lw, top = 92, 24
  local w, h = lw + C * cell + 8, top + C * cell + 64
  local out = { svg_open(w, h, o.title) }
  out[#out + 1] = '<g class="marks">'
  for i = 1, C do
    local row = 0
    for j = 1, C do row = row + cm[i][j] end
    for j = 1, C do
      local share = row > 0 and cm[i][j] / row or 0
      -- white to deep blue; the diagonal uses the model's own hue
      local r, g, b
      local base = (i == j) and o.diag_rgb or { 33, 84, 168 }
      local a = share > 0 and (0.12 + 0.88 * share ^ 0.6) or 0
      r = math.floor(255 + (base[1] - 255) * a + 0.5)
      g = math.floor(255 + (base[2] - 255) * a + 0.5)
      b = math.floor(255 + (base[3] - 255) * a + 0.5)
      out[#out + 1] = ('<rect x="%d" y="%d" width="%d" height="%d" fill="rgb(%d,%d,%d)"><title>%s → %s: %d</title></rect>')
        :format(lw + (j - 1) * cell, top + (i - 1) * cell, cell - 1, cell - 1, r, g, b, tostring(o.labels[i]),
          tostring(o.labels[j]), cm[i][j])
      if cell >= 24 and cm[i][j] > 0 then
        out[#out + 1] = ('<text class="cell" x="%.1f" y="%.1f" text-anchor="middle" fill="%s">%d</text>'):format(
          lw + (j - 0.5) * cell, top + (i - 0.5) * cell + 3.5, a > 0.55 and "#ffffff" or "#333333", cm[i][j])
      end
    end
  end
  out[#out + 1] = "</g>"
  for i = 1, C do
    out[#out + 1] = ('<text class="tick" x="%d" y="%.1f" text-anchor="end">%s</text>'):format(lw - 5,
      top + (i - 0.5) * cell + 4, tostring(o.labels[i]))
    out[#out + 1] = ('<text class="tick" transform="translate(%.1f %d) rotate(-55)" text-anchor="end">%s</text>')
      :format(lw + (i - 0.5) * cell + 3, top + C * cell + 6, tostring(o.labels[i]))
  end
  out[#out + 1] = ('<text class="label" x="%d" y="14">true label ↓  predicted →</text>'):format(lw)
  out[#out + 1] = "</svg>"
  return figure(o.id, o.title, table.concat(out), o.note)
end

-- ------------------------------------------------------------- sections

local CLASS_NAMES = {
  ["fashion-mnist"] = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                        "Ankle boot" },
}

local function class_labels(s, C)
  local name = s.eval_data and s.eval_data.name or ""
  local names = s.classes or (s.eval_data and s.eval_data.classes) or CLASS_NAMES[name:match("^([^/]+)") or ""]
  local l = {}
  for i = 1, C do l[i] = names and names[i] or tostring(i - 1) end
  return l
end

-- What the figures call the data: the eval data's name (s.eval_data,
-- from the manifest or summary.json), and a run's val data's name.
local function eval_name(s) return s.eval_data and s.eval_data.name or "eval data" end
local function val_name(m)
  local man = m.rundata and m.rundata.manifest
  return man and man.data and man.data.val and man.data.val.name
end

local function hex_rgb(h)
  return { tonumber(h:sub(2, 3), 16), tonumber(h:sub(4, 5), 16), tonumber(h:sub(6, 7), 16) }
end

local function loss_charts(s, colours)
  -- three in a row: a narrower drawing, so the text is not shrunk as much
  local w0, h0 = W, H
  if #s.models >= 3 then W, H = 420, 280 end
  local out = {}
  for _, m in ipairs(s.models) do
    local steps = m.rundata and m.rundata.steps or {}
    if #steps > 0 then
      local names, seen = {}, {}
      for _, r in ipairs(steps) do
        for k in pairs(r.terms or {}) do
          if not seen[k] then seen[k] = true names[#names + 1] = k end
        end
      end
      table.sort(names)
      local series = {}
      for i, k in ipairs(names) do
        local pts = {}
        for _, r in ipairs(steps) do
          local v = r.terms and r.terms[k]
          if type(v) == "number" then pts[#pts + 1] = { r.step, v } end
        end
        series[#series + 1] = { label = k, colour = TERM_COLOURS[(i - 1) % #TERM_COLOURS + 1], points = pts }
      end
      if #names > 1 then
        local pts = {}
        for _, r in ipairs(steps) do if type(r.loss) == "number" then pts[#pts + 1] = { r.step, r.loss } end end
        series[#series + 1] = { label = "weighted total", colour = "#555555", points = pts, dash = true }
        -- the total is grey (not a mark by colour) on purpose: it repeats the terms
      end
      out[#out + 1] = line_chart{ id = "loss-" .. m.name, title = ("Loss terms per step: %s"):format(m.name),
                                  series = series, xlabel = "optimizer step", ylabel = "loss (training batch)",
                                  xmin = 0 }
    end
  end
  W, H = w0, h0
  return out
end

local function epoch_charts(s, colours)
  local acc, agree, hl = {}, {}, {}
  local vals = {}
  for _, m in ipairs(s.models) do
    local rows = m.rundata and m.rundata.epochs or {}
    local pa, pg, pv = {}, {}, {}
    for _, r in ipairs(rows) do
      if r.test and r.test.accuracy then pa[#pa + 1] = { r.epoch, 100 * r.test.accuracy } end
      if r.test and r.test.agreement then pg[#pg + 1] = { r.epoch, 100 * r.test.agreement } end
      if r.val and r.val.accuracy then pv[#pv + 1] = { r.epoch, 100 * r.val.accuracy } end
    end
    if #pa > 0 then acc[#acc + 1] = { label = m.name, colour = colours[m.name], points = pa, dots = #pa <= 30 } end
    if #pv > 0 then
      -- val curves dashed, in the model's colour
      local vn = val_name(m) or "val"
      vals[vn] = true
      acc[#acc + 1] = { label = ("%s on %s"):format(m.name, vn), colour = colours[m.name], points = pv,
                        dots = #pv <= 30, dash = true }
    end
    if #pg > 0 then agree[#agree + 1] = { label = m.name, colour = colours[m.name], points = pg, dots = #pg <= 30 } end
    if #pa == 0 and m.eval and m.eval.accuracy then
      hl[#hl + 1] = { y = 100 * m.eval.accuracy, colour = colours[m.name], label = m.name .. " (final)" }
    end
  end
  local out = {}
  if #acc > 0 or #hl > 0 then
    local vl = {}
    for v in pairs(vals) do vl[#vl + 1] = v end
    table.sort(vl)
    local title = ("Accuracy per epoch on %s"):format(eval_name(s))
    if #vl > 0 then title = title .. (" (dashed: %s)"):format(table.concat(vl, ", ")) end
    out[#out + 1] = line_chart{ id = "accuracy", title = title, series = acc, hlines = hl,
                                xlabel = "epoch", ylabel = "top-1 accuracy (%)", xmin = 1,
                                xint = true }
  end
  if #agree > 0 then
    local thl = {}
    out[#out + 1] = line_chart{ id = "agreement", title = ("Agreement with the teacher per epoch on %s"):format(
                                  eval_name(s)), series = agree,
                                hlines = thl, xlabel = "epoch", ylabel = "top-1 agreement (%)", xmin = 1,
                                xint = true }
  end
  return out
end

local function confusion_charts(s, colours)
  local out = {}
  for _, m in ipairs(s.models) do
    local cm = m.eval and m.eval.confusion
    if cm and #cm > 0 then
      out[#out + 1] = heatmap{ id = "confusion-" .. m.name, title = ("Confusion: %s (%s correct)"):format(m.name,
        pct(m.eval.accuracy)), matrix = cm, labels = class_labels(s, #cm), diag_rgb = hex_rgb(colours[m.name]) }
    end
  end
  return out
end

local function speed_size_charts(s, colours)
  local lat, thr, size = {}, {}, {}
  local runs, L -- L: the first model's latency record (a page of several runs may mix)
  for _, m in ipairs(s.models) do
    local l = m.latency
    if l then
      runs = l.runs
      L = L or l
      lat[#lat + 1] = { label = m.name, value = l.p50_ms * 1e3, whisker = l.p95_ms * 1e3, colour = colours[m.name],
                        text = ("%.1f / %.1f µs"):format(l.p50_ms * 1e3, l.p95_ms * 1e3) }
      thr[#thr + 1] = { label = m.name, value = l.throughput, colour = colours[m.name],
                        text = si(l.throughput, "samples/s") }
    end
    if m.size and m.size.params then
      size[#size + 1] = { label = m.name, value = m.size.params, colour = colours[m.name],
                          text = ("%s params, %s"):format(si(m.size.params, ""), bytes(m.size.disk_bytes or
                            m.size.param_bytes)) }
    end
  end
  local out = {}
  if #lat > 0 then
    out[#out + 1] = bar_chart{ id = "latency", title = "Latency per sample at batch 1", items = lat,
                               xlabel = "microseconds (bar: p50, whisker: p95)",
                               note = ("p50 and p95 over %d timed runs after %d warm-up runs, each a forward of one "
                                 .. "sample, measured in one process on %s with %s BLAS thread(s)."):format(runs,
                                 L.warmup or 0, tostring(L.blas or "?"),
                                 tostring(L.threads or "?")) }
    out[#out + 1] = bar_chart{ id = "throughput", title = ("Throughput at batch %d"):format(L.batch),
                               items = thr, xlabel = "samples per second", tickfmt = function(v) return si(v, "") end,
                               note = ("median of %d timed forwards of a full batch"):format(
                                 L.batch_runs or 0) }
  end
  if #size > 0 then
    out[#out + 1] = bar_chart{ id = "size", title = "Size: parameters", items = size, xlabel = "parameters",
                               tickfmt = function(v) return si(v, "") end,
                               note = "bytes: the weights-only checkpoint (best.safetensors) on disk" }
  end
  return out
end

local function calibration_chart(s, colours)
  local series = {}
  for _, m in ipairs(s.models) do
    local bins = m.eval and m.eval.bins
    if bins then
      local pts = {}
      for _, b in ipairs(bins) do
        if b.count and b.count > 0 then pts[#pts + 1] = { 100 * b.confidence, 100 * b.accuracy } end
      end
      series[#series + 1] = { label = ("%s (ECE %.2f%%)"):format(m.name, 100 * (m.eval.ece or 0)),
                              colour = colours[m.name], points = pts, dots = true }
    end
  end
  if #series == 0 then return {} end
  -- the diagonal, in grey: perfect calibration (not a mark)
  local chart = line_chart{ id = "calibration", title = "Calibration (reliability diagram)", series = series,
                            xlabel = "mean confidence in bin (%)", ylabel = "accuracy in bin (%)", ylim = { 0, 100 },
                            xmin = 0, xmax = 100, note = ("15 equal-width confidence bins; empty bins are skipped; the dashed "
                              .. "grey diagonal is perfect calibration.") }
  local pl, pr, pt, pb = PAD.l, W - PAD.r, PAD.t, H - PAD.b
  -- both axes run from 0 to 100: the diagonal joins the plot's corners
  local diag = ('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#9a9a9a" stroke-width="1.5" '
    .. 'stroke-dasharray="4 4"/>'):format(pl, pb, pr, pt)
  chart = chart:gsub('<g class="marks">', diag .. '<g class="marks">', 1)
  return { chart }
end

local function per_class_chart(s, colours)
  local ms = {}
  for _, m in ipairs(s.models) do if m.eval and m.eval.per_class then ms[#ms + 1] = m end end
  if #ms == 0 then return {} end
  local C = #ms[1].eval.per_class
  local labels = class_labels(s, C)
  local w, h = 1120, 270
  local pl, pr, pt, pb = 58, w - 16, 14, h - 34
  local out = { svg_open(w, h, "Per-class accuracy") }
  for _, v in ipairs{ 0, 20, 40, 60, 80, 100 } do
    local y = pb - (pb - pt) * v / 100
    out[#out + 1] = ('<line class="gl" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>'):format(pl, pr, y, y)
    out[#out + 1] = ('<text class="tick" x="%d" y="%.1f" text-anchor="end">%d</text>'):format(pl - 6, y + 4, v)
  end
  out[#out + 1] = ('<text class="label" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">'
    .. 'accuracy (%%)</text>'):format((pt + pb) / 2)
  local gw = (pr - pl) / C
  local bw = math.min(26, (gw - 10) / #ms)
  out[#out + 1] = '<g class="marks">'
  for c = 1, C do
    for k, m in ipairs(ms) do
      local v = m.eval.per_class[c]
      if type(v) == "number" then
        local x = pl + (c - 1) * gw + (gw - bw * #ms) / 2 + (k - 1) * bw
        local y = pb - (pb - pt) * v
        out[#out + 1] = ('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %.2f%%</title>'
          .. '</rect>'):format(x, y, bw - 2, pb - y, colours[m.name], tostring(m.name), tostring(labels[c]), 100 * v)
      end
    end
  end
  out[#out + 1] = "</g>"
  for c = 1, C do
    out[#out + 1] = ('<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>'):format(pl + (c - 0.5) * gw,
      pb + 18, tostring(labels[c]))
  end
  out[#out + 1] = ('<line class="axis" x1="%d" x2="%d" y1="%d" y2="%d"/>'):format(pl, pr, pb, pb)
  out[#out + 1] = "</svg>"
  local items = {}
  for _, m in ipairs(ms) do items[#items + 1] = { label = m.name, colour = colours[m.name] } end
  return { figure("per-class", "Per-class accuracy (recall)", table.concat(out), nil, legend(items)) }
end

local function results_table(s, colours)
  local cols = {
    { "model", function(m) return ('<span class="dot" style="background:%s"></span>%s'):format(colours[m.name],
      tostring(m.name)) end, true },
    { eval_name(s) .. " acc", function(m) return pct(m.eval and m.eval.accuracy) end },
    -- language models: bits per byte (ce / ln 2) on the eval tokens
    { "bits/byte", function(m) return num(m.eval and m.eval.bpb, 3) end },
    { "top-5", function(m) return pct(m.eval and m.eval.top5) end },
    { "agreement", function(m) return pct(m.eval and m.eval.agreement) end },
    { "KL(t‖s)", function(m) return num(m.eval and m.eval.kl, 4) end },
    { "JS", function(m) return num(m.eval and m.eval.js, 4) end },
    { "ECE", function(m) return pct(m.eval and m.eval.ece) end },
    { "params", function(m) return int(m.size and m.size.params) end },
    { "FLOPs/sample", function(m) return si(m.size and m.size.flops, "") end },
    { "on disk", function(m) return bytes(m.size and m.size.disk_bytes) end },
    { "p50 µs", function(m) return m.latency and num(m.latency.p50_ms * 1e3, 1) or "–" end },
    { "p95 µs", function(m) return m.latency and num(m.latency.p95_ms * 1e3, 1) or "–" end },
    { "runs", function(m) return m.latency and int(m.latency.runs) or "–" end },
    { "samples/s", function(m) return m.latency and si(m.latency.throughput, "") or "–" end },
    { "speed-up", function(m) return times(m.speedup) end },
    { "compression", function(m) return times(m.compression) end },
  }
  -- a column no model has a value for is left out (a run folder has no latency)
  local shown = {}
  for i, c in ipairs(cols) do
    local any = c[3]
    for _, m in ipairs(s.models) do any = any or c[2](m) ~= "–" end
    if any then shown[#shown + 1] = cols[i] end
  end
  cols = shown
  local out = { '<div class="tablewrap"><table class="results"><thead><tr>' }
  for _, c in ipairs(cols) do out[#out + 1] = ("<th%s>%s</th>"):format(c[3] and ' class="l"' or "", c[1]) end
  out[#out + 1] = "</tr></thead><tbody>"
  for _, m in ipairs(s.models) do
    out[#out + 1] = "<tr>"
    for _, c in ipairs(cols) do out[#out + 1] = ("<td%s>%s</td>"):format(c[3] and ' class="l"' or "", c[2](m)) end
    out[#out + 1] = "</tr>"
  end
  out[#out + 1] = "</tbody></table></div>"
  return table.concat(out)
end

local function cards(s, colours)
  local t, best
  for _, m in ipairs(s.models) do
    if m.name == s.teacher then t = m end
    if m.role == "student" then best = m end
  end
  best = best or s.models[#s.models]
  local out = { '<div class="cards">' }
  local function card(label, value, sub)
    out[#out + 1] = ('<div class="card"><div class="k">%s</div><div class="v">%s</div><div class="s">%s</div></div>')
      :format(tostring(label), value, sub or "")
  end
  local e = best.eval or {}
  card(("%s: %s accuracy"):format(best.name, eval_name(s)), pct(e.accuracy),
    t and t.eval and ("teacher " .. pct(t.eval.accuracy)) or "")
  if e.agreement then card("agreement with the teacher", pct(e.agreement), "KL " .. num(e.kl, 4) .. ", JS " ..
    num(e.js, 4)) end
  if best.speedup and t and t.latency then card("speed-up (p50, batch 1)", times(best.speedup), ("%s vs %s µs"):format(
    num(best.latency.p50_ms * 1e3, 1), num(t.latency.p50_ms * 1e3, 1))) end
  if best.compression and t and t.size then card("compression (parameters)", times(best.compression), ("%s vs %s"):format(
    si(best.size.params, ""), si(t.size.params, ""))) end
  out[#out + 1] = "</div>"
  return table.concat(out)
end

-- A nested table as rows "a.b.c = value", sorted by key.
local function flatten(v, prefix, rows)
  rows = rows or {}
  if type(v) == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) == type(b) then return a < b end
      return type(a) == "number"
    end)
    if #keys == 0 then rows[#rows + 1] = { prefix, "(empty)" } end
    for _, k in ipairs(keys) do
      local key = type(k) == "number" and ("%s[%d]"):format(prefix, k) or (prefix ~= "" and (prefix .. "." .. k) or k)
      flatten(v[k], key, rows)
    end
  else
    rows[#rows + 1] = { prefix, v }
  end
  return rows
end

local function value_html(v)
  if type(v) == "number" then
    if math.type(v) == "float" and v ~= math.floor(v) then return ("%.6g"):format(v) end
    return ("%d"):format(v)
  end
  local s = tostring(tostring(v))
  if s:match("^%x+$") and #s == 64 then return '<code class="hash">' .. s .. "</code>" end
  return s
end

local function manifest_section(s)
  local out = {}
  if s.eval_data then
    local rows = flatten(s.eval_data, "")
    local t = { '<details open><summary>evaluation data (all figures above)</summary><table class="kv">' }
    for _, r in ipairs(rows) do t[#t + 1] = ("<tr><th>%s</th><td>%s</td></tr>"):format(tostring(r[1]), value_html(r[2])) end
    t[#t + 1] = "</table></details>"
    out[#out + 1] = table.concat(t)
  end
  for _, m in ipairs(s.models) do
    local man = m.rundata and m.rundata.manifest
    if man then
      local rows = flatten(man, "")
      local t = { ('<details%s><summary>%s: manifest.json (%s)</summary><table class="kv">'):format(
        #s.models <= 3 and " open" or "", tostring(m.name), tostring(m.rundata.dir .. "/manifest.json")) }
      for _, r in ipairs(rows) do
        t[#t + 1] = ("<tr><th>%s</th><td>%s</td></tr>"):format(tostring(r[1]), value_html(r[2]))
      end
      t[#t + 1] = "</table></details>"
      out[#out + 1] = table.concat(t)
    end
  end
  return table.concat(out)
end

local CSS = [[
:root{--ink:#1d2329;--muted:#5f6b76;--line:#e3e7eb;--bg:#ffffff;--panel:#f7f9fb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI","DejaVu Sans","Liberation Sans",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:26px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:18px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.sub{color:var(--muted);margin:0 0 18px}
.sample pre{white-space:pre-wrap;background:var(--panel);padding:8px;margin:0 0 14px;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:12px;margin:18px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:28px;font-weight:650;margin:2px 0}
.card .s{color:var(--muted);font-size:12.5px}
.grid{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px}
.grid3{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:14px}
figure.chart{margin:0;background:#fff;border:1px solid var(--line);border-radius:10px;padding:12px 12px 8px}
figure.chart svg{width:100%;height:auto;display:block}
figcaption{font-weight:600;margin:0 0 4px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12.5px;color:var(--muted);margin:0 0 4px}
.legend i{display:inline-block;width:18px;height:4px;border-radius:2px;margin-right:6px;vertical-align:middle}
.note{color:var(--muted);font-size:12.5px;margin:6px 2px 0}
svg .gl{stroke:#eceff2;stroke-width:1}
svg .axis{stroke:#8a949e;stroke-width:1}
svg .tickmark{stroke:#8a949e}
svg text{font-family:inherit}
svg .tick{fill:#5f6b76;font-size:11px}
svg .label{fill:#46505a;font-size:12px}
svg .barlabel{fill:#1d2329;font-size:13px;font-weight:600}
svg .value{fill:#46505a;font-size:12px}
svg .value.inside{fill:#ffffff;font-weight:600}
svg .cell{font-size:10px}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
table.results{font-size:13px}
table.results th,table.results td{padding:6px 6px;border-bottom:1px solid var(--line);text-align:right;
 white-space:nowrap;font-variant-numeric:tabular-nums}
table.results th{font-size:12px;color:var(--muted);font-weight:600}
table.results .l{text-align:left}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:7px;vertical-align:-1px}
details{border:1px solid var(--line);border-radius:10px;margin:10px 0;background:var(--panel)}
summary{cursor:pointer;padding:9px 12px;font-weight:600}
table.kv{font-size:12.5px;background:#fff}
table.kv th{text-align:left;font-weight:500;color:var(--muted);padding:3px 12px;width:34%;vertical-align:top;
 font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
table.kv td{padding:3px 12px;word-break:break-all}
table.kv tr:nth-child(even){background:#fafbfc}
code.hash{font-size:11.5px;color:#3d4a56}
section.run h3{font-size:14px;margin:14px 0 6px;word-break:break-all}
.callout ul{margin:4px 0 0;padding-left:20px}
.callout{background:#fff8e6;border:1px solid #f2d89a;border-radius:8px;padding:8px 12px;color:#5c4a1a;margin:10px 0}
footer{color:var(--muted);font-size:12px;margin-top:30px}
]]

-- The page as one string.
-- A section per run folder (pages of several runs): its models in their
-- colours, the recipe and student, the data and teacher it was measured on.
local function runs_section(s, colours)
  local out = {}
  for i, r in ipairs(s.runs) do
    out[#out + 1] = ('<section class="run" id="run-%d"><h3>%s</h3><table class="kv">'):format(i, r.dir)
    for _, m in ipairs(r.models) do
      local d = m.about
      out[#out + 1] = ('<tr><th><span class="dot" style="background:%s"></span>%s</th><td>%s%s; evaluated on %s; '
        .. 'teacher %s</td></tr>'):format(colours[m.name], m.name, d.recipe, d.model and (", " .. d.model) or "",
        d.data, d.teacher)
    end
    out[#out + 1] = "</table></section>"
  end
  return table.concat(out)
end

local function warnings_html(s)
  local out = {}
  for _, w in ipairs(s.warnings or {}) do
    out[#out + 1] = '<div class="callout warning"><b>Warning: ' .. w.what .. ".</b><ul>"
    for _, r in ipairs(w.runs) do out[#out + 1] = ("<li>%s: %s</li>"):format(r[1], r[2]) end
    out[#out + 1] = "</ul></div>"
  end
  return table.concat(out)
end

-- The page as one string.  s is a summary (M.load, M.load_many); the page
-- is drawn from its escaped copy (see `escaped`).
function M.html(s)
  s = escaped(s)
  local colours = model_colours(s.models)
  local title = s.title or "retort run"
  local b = {}
  local function add(x) b[#b + 1] = x end
  add('<!doctype html><html lang="en"><head><meta charset="utf-8">')
  add('<meta name="viewport" content="width=device-width,initial-scale=1">')
  add("<title>" .. tostring(title) .. " · retort report</title><style>" .. CSS .. "</style></head><body><main>")
  add("<h1>" .. tostring(title) .. "</h1>")
  local man = s.models[1].rundata and s.models[1].rundata.manifest or {}
  local data = s.eval_data and ("%s (%s samples, licence %s)"):format(tostring(s.eval_data.name),
    int(s.eval_data.samples), tostring(s.eval_data.license or "?")) or (s.runs and "different data per run" or "?")
  add(('<p class="sub">%s · evaluated on %s · retort %s · OpenBLAS %s, %s thread(s)</p>')
    :format(tostring(s.created or ""), data, tostring(man.retort and man.retort.version or rt.version), tostring(man.blas and
      man.blas.core or rt.blas_core()), tostring(man.blas and man.blas.threads or rt.threads())))
  add(warnings_html(s))
  add(cards(s, colours))
  if s.note then add('<p class="sub">' .. tostring(s.note) .. "</p>") end
  if s.runs then
    add("<h2>Runs</h2>")
    add(runs_section(s, colours))
  end
  add("<h2>Results</h2>")
  add(results_table(s, colours))
  -- how each run chose best.safetensors, in the data's own names
  local on_val, on_eval = {}, false
  for _, m in ipairs(s.models) do
    local ck = m.rundata and m.rundata.manifest and m.rundata.manifest.checkpoints
    if ck and ck.best_selected_on == "val" then on_val[#on_val + 1] = ("%s: %s"):format(m.name,
      ck.best_selected_on_data or val_name(m) or "val")
    elseif ck and ck.best_selected_on == "eval" then on_eval = true end
  end
  local best_note = ""
  if #on_val > 0 then
    best_note = ("best.safetensors is the epoch with the best accuracy on the validation data (%s).  "):format(
      esc(table.concat(on_val, "; ")))
  end
  if on_eval then
    best_note = best_note .. ("%s chose best.safetensors on %s itself (no validation data given), so that choice is "
      .. "optimistic.  "):format(#on_val > 0 and "The other runs" or "Each run", esc(eval_name(s)))
  end
  add(('<p class="note">Figures are for the final weights of each run (last.safetensors) on %s.  %sSpeed-up and '
    .. "compression are against the teacher.</p>"):format(esc(eval_name(s)), best_note))
  local function section(name, charts, cls)
    if #charts == 0 then return end
    add("<h2>" .. tostring(name) .. "</h2>")
    add(('<div class="%s">'):format(cls or "grid") .. table.concat(charts) .. "</div>")
  end
  section("Training: every loss term", loss_charts(s, colours), #s.models >= 3 and "grid3" or "grid")
  section("Quality and fidelity per epoch", epoch_charts(s, colours))
  section(("Confusion matrices (%s)"):format(eval_name(s)), confusion_charts(s, colours),
    #s.models >= 3 and "grid3" or "grid")
  section("Per class", per_class_chart(s, colours), "one")
  -- generated text of language models (samples.json), already escaped
  local texts = {}
  for _, m in ipairs(s.models) do
    for _, x in ipairs(m.rundata and m.rundata.samples or {}) do
      if type(x) == "table" and type(x.text) == "string" then
        texts[#texts + 1] = ('<div class="sample"><p class="sub"><span class="dot" style="background:%s"></span>%s%s</p>'
          .. "<pre>%s</pre></div>"):format(colours[m.name], tostring(m.name),
          type(x.settings) == "string" and (" · " .. x.settings) or "", x.text)
      end
    end
  end
  if #texts > 0 then
    add("<h2>Generated samples</h2>")
    add(table.concat(texts))
  end
  local sc = speed_size_charts(s, colours)
  for _, c in ipairs(calibration_chart(s, colours)) do sc[#sc + 1] = c end
  section("Speed, size and calibration", sc)
  add("<h2>Provenance</h2>")
  add(manifest_section(s))
  add(("<footer>Written by retort %s on %s.  Self-contained: no script, no network.</footer>"):format(tostring(rt.version),
    tostring(rt.utc_now())))
  add("</main></body></html>\n")
  return table.concat(b)
end

-- dir: a folder, or a list of them (one page for all: runs.lua); a list
-- of several needs o.out.
local function report(dir, o)
  o = o or {}
  local dirs = type(dir) == "table" and dir or { dir }
  if #dirs == 0 then error("report: needs at least one run folder", 2) end
  local s = M.load_many(dirs)
  if o.title then s.title = o.title end
  if #dirs > 1 and not o.out then error("report: several run folders need an output path (out = FILE)", 2) end
  local path = o.out or (dirs[1] .. "/report.html")
  rt.write_atomic(path, M.html(s))
  return path
end

rt.report = setmetatable(M, { __call = function(_, dir, o) return util.call(report, dir, o) end })
