-- lm_distill.lua: sequence-level and on-policy distillation of language
-- models.
--
--   * rt.lm_corpus: the teacher writes a text corpus (Kim & Rush 2016,
--     "sequence-level knowledge distillation"): continuations of prompts
--     drawn from the data, with a provenance JSON beside it;
--     rt.data.lm_corpus reads it back as rt.data.text datasets whose
--     manifest entry names the teacher, the source data and its licence.
--   * rt.on_policy: the `on_policy` option of rt.distill (GKD, Agarwal et
--     al. 2024, as TRL's GKDTrainer): with probability lambda a batch is
--     replaced by the student's own continuations of its prompts, and the
--     teacher-signal terms are computed on the generated positions only.
local rt = ...
local util = rt.util

-- ------------------------------------------------------------ hashing RNG

-- splitmix64 of one 64-bit integer (Lua 5.4 integers wrap): the draws
-- below are functions of (seed, indices), with no state, so they touch no
-- other random stream (rt.seed's, the batcher's) and a resumed run draws
-- what an uninterrupted one would.
local function mix(z)
  z = z + 0x9e3779b97f4a7c15
  z = (z ~ (z >> 30)) * 0xbf58476d1ce4e5b9
  z = (z ~ (z >> 27)) * 0x94d049bb133111eb
  return z ~ (z >> 31)
end

local function hash(...)
  local z = 0
  for _, v in ipairs{ ... } do z = mix(z ~ v) end
  return z
end

-- A uniform number in [0, 1) from the hash of the arguments.
local function uniform(...) return (hash(...) >> 11) * 2.0 ^ -53 end

-- A non-negative seed for rt.generate_ids from the hash of the arguments.
local function subseed(...) return hash(...) >> 1 end

-- Streams (arbitrary constants) so the kinds of draw never coincide.
local PROMPT, GEN, COIN = 0x70726f6d7074, 0x67656e, 0x636f696e

-- A student that generates with the teacher's weights: the `model`
-- teacher's architecture (from its options, or its checkpoint's metadata)
-- with its parameters copied in.  Generation (rt_generate) runs students.
local function teacher_as_student(teacher, what)
  local o = rt.json_decode(teacher:options_json())
  if teacher:name() ~= "model" or type(o) ~= "table" then
    error(("%s: the teacher must be a 'model' teacher of a language model (rt.teacher(net) or "
      .. "rt.teacher(\"model\", {checkpoint = ...})), got the '%s' teacher"):format(what, teacher:name()), 0)
  end
  local arch, opts = o.arch, o.options
  if (arch == nil or arch == "") and type(o.checkpoint) == "string" and o.checkpoint ~= "" then
    local meta = util.call(rt.read_meta, o.checkpoint)
    arch, opts = meta["retort.plugin"], rt.json_decode(meta["retort.options"] or "{}")
  end
  if type(arch) ~= "string" or arch == "" then
    error(("%s: cannot tell the teacher's architecture (no 'arch' option, no checkpoint metadata)"):format(what), 0)
  end
  if type(opts) ~= "table" or next(opts) == nil then opts = nil end
  local s = rt.student(arch, opts)
  rt.copy_parameters(s, teacher)
  return s
end

-- The [n, T] i32 inputs of a language-model dataset, or an error naming
-- what is wrong.
local function lm_inputs(ds, what, field)
  if type(ds) ~= "userdata" or not pcall(ds.size, ds) then
    error(("%s: '%s' must be a dataset of token windows (rt.data.text, rt.data.fortunes)"):format(what, field), 0)
  end
  local x = ds:size() > 0 and ds:x()
  if not x or x:dtype() ~= "i32" or x:dim() ~= 2 then
    error(("%s: '%s' must hold [n, T] i32 token windows (rt.data.text, rt.data.fortunes), got %s"):format(what,
      field, x and (x:dtype() .. " " .. x:dim() .. "-d") or "an empty dataset"), 0)
  end
  return x
end

local function check_int(what, o, k, lo, hi, fix)
  local v = o[k]
  if math.type(v) ~= "integer" or v < lo or (hi and v > hi) then
    error(("%s: '%s' must be an integer in [%d, %s], got %s%s"):format(what, k, lo, hi and tostring(hi) or "inf",
      tostring(v), fix and ("; " .. fix) or ""), 0)
  end
  return v
end

local function check_sampling(what, o)
  if type(o.temperature) ~= "number" or o.temperature <= 0 then
    error(("%s: 'temperature' must be a number > 0, got %s"):format(what, tostring(o.temperature)), 0)
  end
  check_int(what, o, "top_k", 0, nil, "0 keeps every token")
  if type(o.top_p) ~= "number" or o.top_p <= 0 or o.top_p > 1 then
    error(("%s: 'top_p' must be a number in (0, 1], got %s (1 keeps every token)"):format(what, tostring(o.top_p)),
      0)
  end
end

-- ------------------------------------------------------------ rt.lm_corpus

rt.lm_corpus_file, rt.lm_corpus_provenance = "corpus.txt", "corpus.json"

local CORPUS_KEYS = { teacher = 1, prompts = 1, count = 1, prompt_tokens = 1, max_tokens = 1, temperature = 1,
                      top_k = 1, top_p = 1, seed = 1, out = 1, quiet = 1, name = 1 }

local function lm_corpus(o)
  local what = "rt.lm_corpus"
  if type(o) ~= "table" then error(what .. ": needs a table {teacher =, prompts =, count =, out = DIR, ...}", 0) end
  util.check_keys(o, CORPUS_KEYS, what, 1)
  local c = { count = o.count, prompt_tokens = o.prompt_tokens, max_tokens = o.max_tokens or 128,
              temperature = o.temperature or 1, top_k = o.top_k or 0, top_p = o.top_p or 1, seed = o.seed or 1 }
  local t = o.teacher
  if type(t) ~= "userdata" or not pcall(t.kind, t) or t:kind() ~= "teacher" then
    error(what .. ": 'teacher' must be a teacher (rt.teacher(net) or rt.teacher(\"model\", {checkpoint = ...}))", 0)
  end
  local x = lm_inputs(o.prompts, what, "prompts")
  local n, T = x:size(1), x:size(2)
  check_int(what, c, "count", 1, 1 << 24, "the number of continuations to generate")
  if c.prompt_tokens == nil then error(("%s: 'prompt_tokens' is required: the tokens of each prompt, 1 to %d "
    .. "(the prompts' windows)"):format(what, T), 0) end
  check_int(what, c, "prompt_tokens", 1, T, ("a prompt is the start of one of the prompts' windows of %d tokens"):
    format(T))
  check_int(what, c, "max_tokens", 1, 1 << 20, "the tokens the teacher generates after each prompt")
  check_int(what, c, "seed", 0, nil)
  check_sampling(what, c)
  if type(o.out) ~= "string" or o.out == "" then
    error(what .. ": 'out' must be a folder path (the corpus and its provenance are written there)", 0)
  end
  if o.name ~= nil and type(o.name) ~= "string" then error(what .. ": 'name' must be a string", 0) end
  local quiet = rt.quiet(o.quiet)
  util.call(rt.mkdir, o.out)
  local gen = teacher_as_student(t, what)
  -- Each sample: the prompt (the first prompt_tokens of a window drawn
  -- from (seed, sample)), the teacher's max_tokens, a newline.
  local parts, tokens, seconds = {}, 0, 0
  local progress = rt.progress("lm_corpus", c.count, quiet)
  for j = 1, c.count do
    local row = (hash(c.seed, PROMPT, j) >> 1) % n + 1
    local prompt = x:narrow(1, row, 1):totable()[1]
    for i = #prompt, c.prompt_tokens + 1, -1 do prompt[i] = nil end
    local r = rt.generate_ids(gen, prompt, { max_tokens = c.max_tokens, temperature = c.temperature, top_k = c.top_k,
                                             top_p = c.top_p, seed = subseed(c.seed, GEN, j) })
    tokens, seconds = tokens + #r.ids, seconds + r.seconds
    local ok, p = pcall(rt.bytes_decode, prompt)
    local ok2, g = pcall(rt.bytes_decode, r.ids)
    if not (ok and ok2) then
      error(what .. ": the teacher's tokens are not bytes; rt.lm_corpus writes byte-level (vocabulary 256) text", 0)
    end
    parts[#parts + 1] = p .. g .. "\n"
    progress:update(j, ("%.0f tokens/s"):format(seconds > 0 and tokens / seconds or 0))
  end
  progress:finish()
  local text = table.concat(parts)
  local file = o.out .. "/" .. rt.lm_corpus_file
  util.call(rt.write_atomic, file, text)
  local src = rt.data_provenance(o.prompts)
  local tp = rt.model_provenance(t)
  local name = o.name or ("%s-generated"):format(src.name:gsub(":.*$", ""))
  local tname = tp.checkpoint and ("checkpoint %s (sha256 %s)"):format(tp.checkpoint, tp.sha256)
    or ("live weights (rt.teacher(net))%s"):format(tp.run and (", run " .. tp.run.dir) or "")
  local p = {
    format = "retort.lm_corpus/1",
    created = rt.utc_now(),
    retort = { version = rt.version, abi = rt.abi },
    name = name,
    file = rt.lm_corpus_file,
    sha256 = util.call(rt.sha256, text),
    bytes = #text,
    layout = ("%d samples, one a line: the first %d tokens of a window of the source data, then the teacher's %d "
      .. "tokens, then a newline (byte 10)"):format(c.count, c.prompt_tokens, c.max_tokens),
    teacher = tp,
    sampling = { count = c.count, prompt_tokens = c.prompt_tokens, max_tokens = c.max_tokens,
                 temperature = c.temperature, top_k = c.top_k, top_p = c.top_p, seed = c.seed,
                 prompts = "window (hash(seed, sample) mod n) + 1 of the source; each sample's sampler seeded from "
                   .. "(seed, sample)" },
    source = src,
    tokens_generated = tokens,
    seconds = seconds,
    tokens_per_s = seconds > 0 and tokens / seconds or nil,
    license = ("teacher-generated text; prompts from %s (licence: %s); the teacher learned from the data its "
      .. "manifest names"):format(src.name, src.license),
    origin = ("generated by rt.lm_corpus (retort %s): teacher %s, weights sha256 %s; %d continuations of %d tokens "
      .. "after %d-token prompts from %s (%s); temperature %g, top_k %d, top_p %g, seed %d"):format(rt.version,
      tname, tp.weights_sha256 or "?", c.count, c.max_tokens, c.prompt_tokens, src.name, src.origin or "origin "
      .. "not declared", c.temperature, c.top_k, c.top_p, c.seed),
  }
  local pfile = o.out .. "/" .. rt.lm_corpus_provenance
  util.call(rt.write_atomic, pfile, rt.json_encode(p) .. "\n")
  if not quiet then
    io.stderr:write(("lm_corpus: %d samples, %d tokens generated in %.1f s (%.0f tokens/s) -> %s\n"):format(c.count,
      tokens, seconds, p.tokens_per_s or 0, file))
  end
  return { path = file, provenance = pfile, dir = o.out, tokens = tokens, seconds = seconds,
           tokens_per_s = p.tokens_per_s, sha256 = p.sha256, bytes = #text }
end

-- rt.lm_corpus{ teacher, prompts = dataset, count = n, prompt_tokens = k,
--   max_tokens = 128, temperature = 1, top_k = 0, top_p = 1, seed = 1,
--   out = DIR [, name, quiet] } -> { path, provenance, dir, tokens,
--   seconds, tokens_per_s, sha256, bytes }
-- The teacher (a `model` teacher of a language model) continues count
-- prompts, each the first k tokens of a window of `prompts` drawn from
-- (seed, sample), by max_tokens sampled tokens (rt.generate's sampler,
-- key/value cache), and DIR/corpus.txt gets one sample a line (prompt,
-- continuation, newline); DIR/corpus.json its provenance: the teacher
-- (checkpoint, sha256, weights sha256, run), the sampling settings and
-- seed, the source data (name, licence, origin, files), the retort
-- version, tokens generated and tokens/s.  Both files are written
-- atomically (rt.write_atomic), the corpus first.  The same arguments give
-- the same bytes.
rt.lm_corpus = util.api("rt.lm_corpus", lm_corpus)

-- rt.data.lm_corpus{ path = DIR (or DIR/corpus.json), context = T, ... }
-- -> train, val: rt.data.text over DIR/corpus.txt (the other options are
-- rt.data.text's), whose name, licence and origin come from corpus.json
-- (teacher-generated, by which teacher, from which data under which
-- licence); the manifest of a run on it lists both files with their
-- sha256 and the whole corpus.json under data.train.generated.  A corpus
-- whose sha256 is not the one corpus.json recorded is refused.
local function data_lm_corpus(o)
  local what = "rt.data.lm_corpus"
  if type(o) ~= "table" or type(o.path) ~= "string" then
    error(what .. ": needs a table {path = DIR (rt.lm_corpus's out), context = T, ...}", 0)
  end
  local dir = o.path:match("^(.*)/" .. rt.lm_corpus_provenance:gsub("%.", "%%.") .. "$") or o.path:gsub("/+$", "")
  local pfile = dir .. "/" .. rt.lm_corpus_provenance
  if not rt.exists(pfile) then
    error(("%s: %s not found: 'path' must be the folder rt.lm_corpus wrote (its 'out')"):format(what, pfile), 0)
  end
  local p = rt.json_decode(util.read_file(pfile))
  if type(p) ~= "table" or p.format ~= "retort.lm_corpus/1" then
    error(("%s: %s is not an rt.lm_corpus provenance (format %s)"):format(what, pfile, tostring(p and p.format)), 0)
  end
  local file = dir .. "/" .. (p.file or rt.lm_corpus_file)
  local sha = rt.exists(file) and util.call(rt.sha256_file, file)
  if sha ~= p.sha256 then
    error(("%s: %s %s; %s recorded sha256 %s: regenerate the corpus with rt.lm_corpus"):format(what, file,
      sha and ("has sha256 " .. sha) or "is missing", pfile, tostring(p.sha256)), 0)
  end
  local c = {}
  for k, v in pairs(o) do c[k] = v end
  for _, k in ipairs{ "name", "license", "origin" } do
    if c[k] ~= nil then error(("%s: '%s' comes from %s; leave it out"):format(what, k, pfile), 0) end
  end
  c.path, c.name, c.license, c.origin = file, p.name, p.license, p.origin .. "; provenance " .. pfile
  local train, val = rt.data.text(c)
  for _, ds in ipairs{ train or false, val or false } do
    local info = ds and rt.data.info[ds]
    if info then info.files, info.generated = { file, pfile }, p end
  end
  return train, val
end
rt.data.lm_corpus = util.api("rt.data.lm_corpus", data_lm_corpus)

-- ------------------------------------------------------------ on-policy

local POLICY_KEYS = { lambda = 1, temperature = 1, top_k = 1, top_p = 1, prompt_tokens = 1, seed = 1 }

rt.on_policy = {}

-- rt.on_policy.check(cfg, terms, data, teacher) -> policy or nil: checks
-- rt.distill's `on_policy` table ({lambda = 0.5, temperature = 0.9,
-- top_k = 0, top_p = 1, prompt_tokens = T // 2, seed = cfg.seed}) and
-- returns the settings; raises "on_policy: ..." otherwise.  record is the
-- manifest's on_policy part (batches filled in at the end).
function rt.on_policy.check(cfg, terms, data, teacher)
  local o = cfg.on_policy
  if o == nil then return nil end
  local what = "rt.distill: on_policy"
  if type(o) ~= "table" then
    error(what .. " must be a table {lambda = 0.5, temperature = 0.9, prompt_tokens = k, seed = s}", 0)
  end
  util.check_keys(o, POLICY_KEYS, what, 1)
  if not teacher then error(what .. ": the teacher scores the student's samples; give 'teacher'", 0) end
  local x = lm_inputs(data, what, "data")
  local T = x:size(2)
  local p = { lambda = o.lambda == nil and 0.5 or o.lambda, temperature = o.temperature or 0.9, top_k = o.top_k or 0,
              top_p = o.top_p or 1, prompt_tokens = o.prompt_tokens or math.max(1, T // 2), seed = o.seed or cfg.seed
              or 1 }
  if type(p.lambda) ~= "number" or p.lambda < 0 or p.lambda > 1 then
    error(("%s: 'lambda' must be a number in [0, 1] (the probability of an on-policy batch), got %s"):format(what,
      tostring(p.lambda)), 0)
  end
  check_sampling(what, p)
  check_int(what, p, "prompt_tokens", 1, T - 1, ("the windows have %d tokens: the student generates the other "
    .. "T - prompt_tokens >= 1"):format(T))
  check_int(what, p, "seed", 0, nil)
  local scored = {}
  for _, t in ipairs(terms) do
    if t.features and (#t.features > 0 or t.binds) then
      error(("%s: loss '%s' reads features or binds the run; on-policy batches support logit losses only")
        :format(what, t.name), 0)
    end
    if t.needs_teacher then scored[#scored + 1] = t.name end
  end
  if #scored == 0 then
    error(what .. ": no loss term uses the teacher, so an on-policy batch would train nothing; add a divergence "
      .. "(e.g. rt.loss(\"jsd\", {beta = 0.5}), TRL's default)", 0)
  end
  p.T = T
  p.record = { lambda = p.lambda, temperature = p.temperature, top_k = p.top_k, top_p = p.top_p,
               prompt_tokens = p.prompt_tokens, seed = p.seed, generated_tokens = T - p.prompt_tokens,
               scored_terms = scored,
               convention = "GKD as TRL: with probability lambda (a hash of (seed, step)) a batch is the student's "
                 .. "continuations of the first prompt_tokens of each window; terms that need labels are skipped "
                 .. "(value 0) on those batches, the teacher terms are computed on the generated positions only" }
  return p
end

-- Whether the batch of step `step` is on-policy.
local function coin(p, step) return p.lambda > 0 and uniform(p.seed, COIN, step) < p.lambda end

-- The on-policy batches among steps [0, steps): the coin is a function of
-- (seed, step), so this counts a resumed run's earlier steps too.
function rt.on_policy.count(p, steps)
  local k = 0
  for s = 0, steps - 1 do if coin(p, s) then k = k + 1 end end
  return k
end

-- rt.on_policy.make_batch(p, student, x, step) -> x2, y2, mask, count:
-- row i of x2 is the first prompt_tokens of x's row i, then the student's
-- T - prompt_tokens sampled tokens (no gradient: rt.generate_ids, the key/
-- value cache; sampler seeded from (seed, step, i)); y2 the next tokens of
-- x2, -1 (no label) at the prompt's positions and the last one; mask
-- [N, T] i32 1 where y2 is a generated token; count = N (T - k).
function rt.on_policy.make_batch(p, student, x, step)
  local rows, k, T = x:totable(), p.prompt_tokens, p.T
  local xs, ys = {}, {}
  for i, row in ipairs(rows) do
    local prompt = {}
    for j = 1, k do prompt[j] = row[j] end
    local r = rt.generate_ids(student, prompt, { max_tokens = T - k, temperature = p.temperature, top_k = p.top_k,
                                                 top_p = p.top_p, seed = subseed(p.seed, GEN, step, i) })
    local seq = prompt
    for j = 1, T - k do seq[k + j] = r.ids[j] end
    local y = {}
    for j = 1, T do y[j] = (j >= k and j < T) and seq[j + 1] or -1 end
    xs[i], ys[i] = seq, y
  end
  local y2 = rt.tensor(ys, "i32")
  local mask, count = rt.label_mask(y2)
  return rt.tensor(xs, "i32"), y2, mask, count
end

-- Called by rt.distill before each step: on an on-policy step, returns the
-- generated batch and sets run.policy_batch = {mask, count} (step.lua
-- masks every term with it and skips the terms that need labels); else
-- returns x, y and clears it.
function rt.on_policy.batch(p, run, x, y, step)
  run.policy_batch = nil
  if not coin(p, step) then return x, y end
  local x2, y2, mask, count = rt.on_policy.make_batch(p, run.student, x, step)
  run.policy_batch = { mask = mask, count = count }
  return x2, y2
end
