-- lm.lua: language models (issue 11): text datasets, the fortunes corpus,
-- generation, and `retort generate`.
local rt = ...
local util = rt.util

-- rt.data.text{ path = file or folder, context = T [, windows = 2000,
--   seed = 1, epoch = 0, val_fraction = 0.1, val_windows = n,
--   skip_suffix = ".dat", name, license, origin] } -> train, val
-- Byte-level datasets of next-token windows: x [n, T] i32 and y [n, T]
-- i32, y the x shifted by one token.  train: `windows` random windows of
-- the training split, reproducible from (seed, epoch); val: the
-- validation split's consecutive windows (all, or the first val_windows),
-- nil when there is no validation split.  Each file's last val_fraction of
-- bytes is validation (core/rt_text.h says why).
function rt.data.text(o)
  if type(o) ~= "table" then error("rt.data.text: needs a table {path = ..., context = T}", 2) end
  util.check_keys(o, { path = 1, context = 1, windows = 1, seed = 1, epoch = 1, val_fraction = 1, val_windows = 1,
                       skip_suffix = 1, max_bytes = 1, name = 1, license = 1, origin = 1 }, "rt.data.text", 2)
  if type(o.path) ~= "string" then error("rt.data.text: 'path' must be a file or folder", 2) end
  if math.type(o.context) ~= "integer" then error("rt.data.text: 'context' must be an integer (tokens per window)", 2) end
  local r = util.call(rt.text_load, o.path, { context = o.context, windows = o.windows or 2000, seed = o.seed,
    epoch = o.epoch, val_fraction = o.val_fraction, val_windows = o.val_windows, skip_suffix = o.skip_suffix,
    max_bytes = o.max_bytes })
  local name = o.name or o.path:match("([^/]+)/?$")
  local function info(part, n)
    return { name = name .. ":" .. part, license = o.license, origin = o.origin, size = n, path = o.path,
             text = { files = r.files, bytes = r.bytes, tokenizer = r.tokenizer, vocab = r.vocab, context = o.context,
                      train_tokens = r.train_tokens, val_tokens = r.val_tokens, seed = o.seed or 1,
                      epoch = o.epoch or 0, val_fraction = o.val_fraction or 0.1 } }
  end
  local train = r.train_x and util.call(rt.dataset, r.train_x, r.train_y)
  if train then rt.data.info[train] = info("train", #r.train_x) end
  local val = r.val_x and util.call(rt.dataset, r.val_x, r.val_y)
  if val then rt.data.info[val] = info("val", #r.val_x) end
  return train, val
end

rt.data.fortunes_dir = "/usr/share/games/fortunes"

-- rt.data.fortunes{ context = T, ... } -> train, val: rt.data.text over
-- the English fortunes of the Debian package `fortunes` (BSD licence).
function rt.data.fortunes(o)
  o = o or {}
  local c = {}
  for k, v in pairs(o) do c[k] = v end
  c.path = c.path or rt.data.fortunes_dir
  if not rt.exists(c.path) then
    error(("rt.data.fortunes: %s not found (install the Debian package fortunes: make deps)"):format(c.path), 2)
  end
  c.skip_suffix = c.skip_suffix or ".dat"
  c.name = c.name or "fortunes"
  c.license = c.license or "BSD-3-Clause (the advertising clause deleted; /usr/share/doc/fortunes/copyright)"
  c.origin = c.origin or "fortune(6) databases (Ken Arnold, The Regents of the University of California, and contributors; Debian package fortunes, read from /usr/share/games/fortunes)"
  return rt.data.text(c)
end

-- A student from a checkpoint path (its metadata names the plugin and
-- options), or the student itself.
local function as_student(model, level)
  if type(model) == "string" then
    local meta = util.call(rt.read_meta, model)
    if meta["retort.kind"] and meta["retort.kind"] ~= "student" then
      error(("%s holds a %s, not a student"):format(model, meta["retort.kind"]), level + 1)
    end
    if not meta["retort.plugin"] then error(model .. ": no 'retort.plugin' in its metadata", level + 1) end
    local s = util.call(rt.student, meta["retort.plugin"], rt.json_decode(meta["retort.options"] or "{}"))
    util.call(s.load, s, model)
    return s
  end
  if type(model) ~= "userdata" or not pcall(model.kind, model) or model:kind() ~= "student" then
    error("rt.generate: the model must be a student or a checkpoint path", level + 1)
  end
  return model
end

-- rt.generate(model, prompt [, {max_tokens = 64, temperature = 1,
--   top_k = 0, top_p = 1, seed = 1, cache = true}]) -> text, info
-- model: a language-model student (gpt) or its checkpoint's path;
-- prompt: a string (bytes) or a list of token ids.  Deterministic for a
-- seed; cache = false takes full forwards (the same tokens, slower).
-- info = { ids, tokens, seconds, tokens_per_s, cached }.
function rt.generate(model, prompt, o)
  o = o or {}
  util.check_keys(o, { max_tokens = 1, temperature = 1, top_k = 1, top_p = 1, seed = 1, cache = 1 }, "rt.generate", 2)
  local s = as_student(model, 2)
  local ids = type(prompt) == "string" and rt.bytes_encode(prompt) or prompt
  if type(ids) ~= "table" then error("rt.generate: the prompt must be a string or a list of token ids", 2) end
  local r = util.call(rt.generate_ids, s, ids, o)
  local n = #r.ids
  local ok, text = pcall(rt.bytes_decode, r.ids)
  local info = { ids = r.ids, tokens = n, seconds = r.seconds, cached = r.cached,
                 tokens_per_s = r.seconds > 0 and n / r.seconds or nil }
  return ok and text or nil, info
end

local USAGE = "usage: retort generate CHECKPOINT --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K]"
  .. " [--top-p P] [--seed S] [--no-cache]"

rt.command{
  name = "generate", usage = "generate CHECKPOINT --prompt TEXT", help = "sample text from a language-model checkpoint",
  run = function(args)
    local o, gen = {}, {}
    local num = { ["--max-tokens"] = "max_tokens", ["--temperature"] = "temperature", ["--top-k"] = "top_k",
                  ["--top-p"] = "top_p", ["--seed"] = "seed" }
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "--help" or a == "-h" then print(USAGE) return 0
      elseif a == "--prompt" then
        i = i + 1
        if args[i] == nil then error("--prompt needs a value", 0) end
        o.prompt = args[i]
      elseif num[a] then
        i = i + 1
        local v = tonumber(args[i] or "")
        if not v then error(a .. " needs a number", 0) end
        if num[a] == "max_tokens" or num[a] == "top_k" or num[a] == "seed" then
          if math.type(v) ~= "integer" then error(a .. " needs an integer", 0) end
        end
        gen[num[a]] = v
      elseif a == "--no-cache" then gen.cache = false
      elseif a:match("^%-%-") then error("unknown option " .. a .. "\n" .. USAGE, 0)
      elseif o.checkpoint == nil then o.checkpoint = a
      else error("unexpected argument '" .. a .. "'\n" .. USAGE, 0) end
      i = i + 1
    end
    if not o.checkpoint or not o.prompt then error(USAGE, 0) end
    local text, info = rt.generate(o.checkpoint, o.prompt, gen)
    io.write(o.prompt, text or "", "\n")
    io.stdout:flush()
    io.stderr:write(("generate: %d tokens in %.3f s (%.0f tokens/s, %s)\n"):format(info.tokens, info.seconds,
      info.tokens_per_s or 0, info.cached and "key/value cache" or "full forwards"))
    return 0
  end,
}

-- rt.lm_flat(t): [N, T, V] -> [N*T, V], [N, T] -> [N*T] (a view), so the
-- per-sample metrics count every position as a sample.
function rt.lm_flat(t)
  if t:dim() == 3 then return t:reshape{ t:size(1) * t:size(2), t:size(3) } end
  if t:dim() == 2 and t:dtype() == "i32" then return t:reshape{ t:size(1) * t:size(2) } end
  return t
end

-- The language-model fields of rt.evaluate's result on [N, T, V] outputs:
-- tokens (positions scored), ce (mean cross-entropy in nats per token),
-- perplexity, and bpb = ce / ln 2, bits per byte for byte-level data (one
-- token per byte).  accuracy is then next-token accuracy.
function rt.lm_eval_fields(r, ce)
  r.tokens, r.ce, r.perplexity, r.bpb = r.samples, ce, math.exp(ce), ce / math.log(2)
end

-- Whether rt.distill may cache the teacher's logits of the whole training
-- set: not when they are per token ([N, T, V] from [N, T] inputs: V floats
-- per token of the corpus, 1 GiB for 1M tokens of bytes).
function rt.lm_cacheable(teacher, data)
  local x = data:size() > 0 and data:x()
  if not x or x:dtype() ~= "i32" or x:dim() < 2 then return true end
  local ok, z = pcall(teacher.forward, teacher, x:narrow(1, 1, 1), rt.tensor({ 0 }, "i32"))
  return not (ok and z:dim() > 2)
end
