-- cmd_eval.lua: retort eval CHECKPOINT --data SPEC [--teacher CKPT]
--                           [--limit N] [--json]
-- Evaluates a saved model (any student checkpoint: the 'model' teacher
-- rebuilds it from the checkpoint's metadata): accuracy, top-5, ECE,
-- per-class accuracy and the confusion matrix; with --teacher, agreement,
-- KL(teacher || model) and JS.  SPEC is fashion-mnist:train|test or
-- IMAGES,LABELS (IDX files, gzip or not).
local rt = ...

local function dataset(spec, limit)
  local split = spec:match("^fashion%-mnist:(%a+)$")
  if split then return rt.data.fashion_mnist(split, { limit = limit }) end
  local images, labels = spec:match("^([^,]+),([^,]+)$")
  if not images then
    error(("--data '%s': expected fashion-mnist:train|test or IMAGES,LABELS"):format(spec), 0)
  end
  return rt.data.idx{ images = images, labels = labels, limit = limit, name = images }
end

local USAGE = "usage: retort eval CHECKPOINT --data fashion-mnist:test|IMAGES,LABELS [--teacher CKPT] [--limit N] [--json]"

rt.command{
  name = "eval", usage = "eval CHECKPOINT --data D", help = "evaluate a saved model (accuracy, ECE, confusion, fidelity)",
  run = function(args)
    local o = { limit = 0 }
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "--help" or a == "-h" then print(USAGE) return 0
      elseif a == "--data" or a == "--teacher" or a == "--limit" then
        i = i + 1
        if args[i] == nil then error(a .. " needs a value", 0) end
        o[a:sub(3)] = args[i]
      elseif a == "--json" then o.json = true
      elseif a:match("^%-%-") then error("unknown option " .. a .. "\n" .. USAGE, 0)
      elseif o.checkpoint == nil then o.checkpoint = a
      else error("unexpected argument '" .. a .. "'\n" .. USAGE, 0) end
      i = i + 1
    end
    if not o.checkpoint or not o.data then error(USAGE, 0) end
    local limit = tonumber(o.limit)
    if not limit then error("--limit must be a number", 0) end
    local data = dataset(o.data, limit)
    local model = rt.teacher("model", { checkpoint = o.checkpoint })
    local teacher = o.teacher and rt.teacher("model", { checkpoint = o.teacher })
    local r = rt.evaluate(model, data, { teacher = teacher })
    r.checkpoint, r.sha256 = o.checkpoint, rt.sha256_file(o.checkpoint)
    if teacher then r.teacher, r.teacher_sha256 = o.teacher, rt.sha256_file(o.teacher) end
    if o.json then
      print(rt.json_encode(r))
      return 0
    end
    local function p(v) return type(v) == "number" and ("%.2f%%"):format(100 * v) or "-" end
    print(("%s (sha256 %s) on %s, %d samples"):format(o.checkpoint, r.sha256, o.data, r.samples))
    print(("  accuracy %s   top-5 %s   ECE %s (15 bins)"):format(p(r.accuracy), p(r.top5), p(r.ece)))
    if teacher then
      print(("  teacher %s: agreement %s   KL(t||s) %.4f   JS %.4f"):format(o.teacher, p(r.agreement), r.kl, r.js))
    end
    if r.confusion then
      local C = #r.confusion
      local headers, rows = { "label", "acc %" }, {}
      for j = 1, C do headers[#headers + 1] = tostring(j - 1) end
      for c = 1, C do
        local row = { tostring(c - 1), (p(r.per_class[c]):gsub("%%", "")) }
        for j = 1, C do row[#row + 1] = r.confusion[c][j] end
        rows[#rows + 1] = row
      end
      print("\nper class and confusion matrix (row: true label, column: prediction):")
      print(rt.util.format_table(headers, rows))
    end
    return 0
  end,
}
