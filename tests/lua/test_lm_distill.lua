-- test_lm_distill.lua: sequence-level distillation (rt.lm_corpus: a
-- teacher-generated corpus, reproducible from its seed, with its
-- provenance carried into the student's manifest) and on-policy
-- distillation (rt.distill's on_policy: lambda 0 is the run without it,
-- lambda 1 trains on the student's samples with the prompt masked, runs
-- repeat, bad settings are refused).
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local root = T.tmpdir()
do
  local f = assert(io.open(root .. "/a.txt", "w"))
  for i = 1, 200 do f:write(("the cat %d sat on the mat. "):format(i % 7)) end
  f:close()
end
local train = rt.data.text{ path = root .. "/a.txt", context = 12, windows = 48, seed = 1, name = "cats",
                            license = "CC0-1.0", origin = "test sentences" }
local small = { width = 16, heads = 2, layers = 2, context = 12, seed = 3 }
-- a teacher from a checkpoint (so the provenance has a file sha256)
local tnet = rt.student("gpt", { width = 16, heads = 2, layers = 2, context = 12, seed = 9 })
tnet:save(root .. "/teacher.safetensors")
local teacher = rt.teacher("model", { checkpoint = root .. "/teacher.safetensors" })

local function corpus(dir, seed, extra)
  local o = { teacher = teacher, prompts = train, count = 6, prompt_tokens = 4, max_tokens = 20, temperature = 0.9,
              top_k = 40, top_p = 0.95, seed = seed, out = dir, quiet = true }
  for k, v in pairs(extra or {}) do o[k] = v end
  return rt.lm_corpus(o)
end

T.test("lm_corpus: the same seed writes the same bytes, another seed other bytes", function()
  local a, b, c = corpus(root .. "/ca", 5), corpus(root .. "/cb", 5), corpus(root .. "/cc", 6)
  local ta, tb, tc = read(a.path), read(b.path), read(c.path)
  T.check(#ta == 6 * (4 + 20 + 1), ("6 samples of prompt, continuation, newline: %d bytes"):format(#ta))
  T.check(ta == tb, "same seed, same corpus")
  T.check(ta ~= tc, "another seed, another corpus")
  T.check(a.sha256 == rt.sha256_file(a.path), "the returned sha256 is the file's")
  T.check(a.tokens == 6 * 20, "tokens generated")
  -- each line starts with the first 4 tokens of one of the source windows
  local starts = {}
  for _, row in ipairs(train:x():totable()) do starts[rt.bytes_decode{ row[1], row[2], row[3], row[4] }] = true end
  local n = 0
  for line in ta:gmatch("([^\n]*)\n") do
    n = n + 1
    T.check(starts[line:sub(1, 4)], ("line %d starts with a prompt from the data: %q"):format(n, line))
  end
  T.check(n == 6, "six lines")
end)

T.test("lm_corpus: the provenance records the teacher's sha256, the settings and the source", function()
  local r = corpus(root .. "/cp", 5)
  local p = rt.json_decode(read(r.provenance))
  T.check(p.format == "retort.lm_corpus/1", "format")
  T.check(p.teacher.checkpoint == root .. "/teacher.safetensors", "teacher checkpoint path")
  T.check(p.teacher.sha256 == rt.sha256_file(root .. "/teacher.safetensors"), "teacher checkpoint sha256")
  T.check(p.teacher.weights_sha256 == rt.weights_sha256(tnet), "teacher weights sha256")
  local s = p.sampling
  T.check(s.count == 6 and s.prompt_tokens == 4 and s.max_tokens == 20 and s.temperature == 0.9 and s.top_k == 40
          and s.top_p == 0.95 and s.seed == 5, "sampling settings")
  T.check(p.source.name == "cats:train" and p.source.license == "CC0-1.0" and p.source.origin == "test sentences",
          "source data name, licence, origin")
  T.check(p.retort.version == rt.version, "retort version")
  T.check(p.tokens_generated == 120 and p.seconds >= 0, "tokens generated")
  T.check(p.sha256 == r.sha256 and p.bytes == #read(r.path), "corpus sha256 and size")
  T.check(p.license:find("teacher-generated", 1, true) and p.license:find("CC0-1.0", 1, true), p.license)
  T.check(p.origin:find(p.teacher.sha256, 1, true) and p.origin:find("cats:train", 1, true), p.origin)
  -- no temporary files left beside them
  local ls = io.popen("ls -A " .. root .. "/cp"):read("a")
  T.check(ls == "corpus.json\ncorpus.txt\n", "only the corpus and its provenance: " .. ls)
end)

T.test("a student trained on the corpus names its provenance in the manifest", function()
  local r = corpus(root .. "/cm", 5)
  local data = rt.data.lm_corpus{ path = r.dir, context = 12, windows = 32, seed = 1 }
  local s = rt.student("gpt", small)
  rt.fit{ student = s, data = data, epochs = 1, batch = 8, out = root .. "/run_seq", quiet = true }
  local m = rt.json_decode(read(root .. "/run_seq/manifest.json"))
  local d = m.data.train
  T.check(d.name == "cats-generated:train", "name " .. tostring(d.name))
  T.check(d.license:find("teacher-generated", 1, true) and d.license:find("CC0-1.0", 1, true), d.license)
  T.check(d.origin:find(rt.sha256_file(root .. "/teacher.safetensors"), 1, true), "origin names the teacher sha256")
  T.check(d.origin:find(r.provenance, 1, true), "origin names the provenance file")
  T.check(d.files[1].path == r.path and d.files[1].sha256 == r.sha256, "the corpus file and its sha256")
  T.check(d.files[2].sha256 == rt.sha256_file(r.provenance), "the provenance file and its sha256")
  T.check(d.generated and d.generated.teacher.sha256 == rt.sha256_file(root .. "/teacher.safetensors")
          and d.generated.sampling.seed == 5, "the whole provenance under data.train.generated")
  -- a corpus changed after it was written is refused
  local f = assert(io.open(r.path, "ab"))
  f:write("x")
  f:close()
  T.raises(function() rt.data.lm_corpus{ path = r.dir, context = 12 } end, "rt.data.lm_corpus", "sha256",
           "regenerate")
  T.raises(function() rt.data.lm_corpus{ path = root .. "/nothing", context = 12 } end, "corpus.json not found")
end)

T.test("lm_corpus: bad options are refused with what and how", function()
  T.raises(function() corpus(root .. "/bad", 1, { prompt_tokens = 13 }) end, "rt.lm_corpus", "'prompt_tokens'",
           "[1, 12]")
  T.raises(function() corpus(root .. "/bad", 1, { count = 0 }) end, "'count'")
  T.raises(function() corpus(root .. "/bad", 1, { temperature = 0 }) end, "'temperature'", "> 0")
  T.raises(function() corpus(root .. "/bad", 1, { top_p = 1.5 }) end, "'top_p'")
  T.raises(function() corpus(root .. "/bad", 1, { out = false }) end, "'out'")
  T.raises(function() corpus(root .. "/bad", 1, { temprature = 1 }) end, "unknown field", "temperature")
  T.raises(function() corpus(root .. "/bad", 1, { teacher = tnet }) end, "'teacher' must be a teacher")
  T.raises(function() corpus(root .. "/bad", 1, { prompts = rt.dataset(rt.zeros{ 4, 3 }) }) end, "'prompts'",
           "i32")
  T.check(not rt.exists(root .. "/bad/corpus.txt"), "nothing written")
end)

-- ------------------------------------------------------------ on-policy

local function run(dir, o, loss)
  local s = rt.student("gpt", small)
  local cfg = { student = s, teacher = teacher, data = train, epochs = 1, batch = 8, seed = 2, quiet = true,
                log_every = 1, out = root .. "/" .. dir, overwrite = true,
                loss = loss or { { rt.loss("jsd", { beta = 0.5 }), 1, name = "jsd" }, { rt.loss("ce"), 0.5,
                                                                                       name = "ce" } } }
  cfg.on_policy = o
  rt.distill(cfg)
  local steps = {}
  for line in io.lines(cfg.out .. "/metrics.jsonl") do
    local e = rt.json_decode(line)
    if e.event == "step" then steps[#steps + 1] = e end
  end
  return rt.weights_sha256(s), rt.json_decode(read(cfg.out .. "/manifest.json")), steps
end

T.test("on_policy lambda = 0 gives the weights of the run without it", function()
  local off = run("off")
  local zero, m = run("zero", { lambda = 0, prompt_tokens = 4, seed = 7 })
  T.check(off == zero, "bit-identical weights")
  T.check(m.on_policy.lambda == 0 and m.on_policy.batches == 0, "recorded, no on-policy batch")
  local half = run("half", { lambda = 0.5, prompt_tokens = 4, seed = 7 })
  T.check(half ~= off, "lambda 0.5 changes the run")
end)

T.test("on_policy lambda = 1: every batch is the student's samples, the prompt carries no loss", function()
  local _, m, steps = run("one", { lambda = 1, prompt_tokens = 4, seed = 7, temperature = 0.9 })
  T.check(#steps == 6, "6 steps")
  for _, e in ipairs(steps) do
    T.check(e.on_policy == 8 * (12 - 4), ("step %d: %s positions scored, want N (T - k) = 64"):format(e.step,
      tostring(e.on_policy)))
    T.check(e.terms.ce == 0, "the CE term (it needs the data's labels) is skipped on on-policy batches")
    T.check(e.terms.jsd > 0, "the divergence is trained")
  end
  local p = m.on_policy
  T.check(p.batches == 6 and p.lambda == 1 and p.prompt_tokens == 4 and p.seed == 7 and p.temperature == 0.9,
          "manifest: settings and the count of on-policy batches")
  -- the batch itself: the prompt is the data's, the mask 0 on the prompt
  local pol = rt.on_policy.check({ on_policy = { lambda = 1, prompt_tokens = 4, seed = 7 } },
    { { name = "jsd", needs_teacher = true } }, train, teacher)
  local s = rt.student("gpt", small)
  local x = train:x():narrow(1, 1, 8)
  local x2, y2, mask, count = rt.on_policy.make_batch(pol, s, x, 0)
  T.check(count == 64 and mask:sum() == 64, "mask sum N (T - k)")
  local xt, x2t, y2t, mt = x:totable(), x2:totable(), y2:totable(), mask:totable()
  for i = 1, 8 do
    for j = 1, 12 do
      if j <= 4 then T.check(x2t[i][j] == xt[i][j], "the prompt is the data's") end
      T.check(mt[i][j] == ((j >= 4 and j < 12) and 1 or 0), ("mask at %d, %d"):format(i, j))
      if j < 12 then T.check(y2t[i][j] == (mt[i][j] == 1 and x2t[i][j + 1] or -1), "y: the generated next token") end
    end
  end
  -- the loss does not see the logits at masked positions
  local z, tz = s:forward(x2, false):clone(), teacher:forward(x2)
  local jsd = rt.loss("jsd", { beta = 0.5 })
  local v1 = jsd:forward{ z, tz, nil, mask = mask }
  for i = 1, 8 do for j = 1, 3 do z:set(i, j, 1, 50) end end
  z:set(1, 12, 2, 50)
  local v2 = jsd:forward{ z, tz, nil, mask = mask }
  T.check(v1 == v2 and v1 > 0, ("masked positions carry no loss: %s vs %s"):format(v1, v2))
end)

T.test("on_policy: the step's divergence is the masked one on the student's samples", function()
  local _, _, steps = run("first", { lambda = 1, prompt_tokens = 4, seed = 7 },
                          { { rt.loss("jsd", { beta = 0.5 }), 1, name = "jsd" } })
  -- step 0 again by hand: the first batch, the same generation, the mask
  local x
  for b in train:batches(8, { shuffle = true, seed = 2, epoch = 0 }) do x = b break end
  local pol = rt.on_policy.check({ on_policy = { lambda = 1, prompt_tokens = 4, seed = 7 } },
    { { name = "jsd", needs_teacher = true } }, train, teacher)
  local s = rt.student("gpt", small)
  local x2, _, mask = rt.on_policy.make_batch(pol, s, x, 0)
  local z, tz = s:forward(x2, false), teacher:forward(x2)
  local jsd = rt.loss("jsd", { beta = 0.5 })
  local masked, whole = jsd:forward{ z, tz, nil, mask = mask }, jsd:forward(z, tz)
  T.near(steps[1].terms.jsd, masked, 1e-9, "step 0's jsd is the masked value")
  T.check(math.abs(masked - whole) > 1e-9 * masked, "the mask matters here")
end)

T.test("on_policy: the same seed repeats the run; another seed differs", function()
  local o = { lambda = 0.5, prompt_tokens = 5, seed = 11 }
  local a, ma, sa = run("r1", o)
  local b = run("r2", o)
  T.check(a == b, "same seed, same weights")
  local k = 0
  for _, e in ipairs(sa) do if e.on_policy then k = k + 1 end end
  T.check(ma.on_policy.batches == k and k > 0 and k < 6, ("on-policy batches counted: %d"):format(k))
  local c = run("r3", { lambda = 0.5, prompt_tokens = 5, seed = 12 })
  T.check(a ~= c, "another seed, another run")
end)

T.test("on_policy: bad settings are refused", function()
  T.raises(function() run("bad", { lambda = 2 }) end, "rt.distill: on_policy", "'lambda'", "[0, 1]")
  T.raises(function() run("bad", { prompt_tokens = 12 }) end, "'prompt_tokens'", "[1, 11]")
  T.raises(function() run("bad", { temperature = -1 }) end, "'temperature'")
  T.raises(function() run("bad", { lamda = 0.5 }) end, "unknown field", "lambda")
  T.raises(function() run("bad", 0.5) end, "on_policy must be a table")
  T.raises(function() run("bad", { lambda = 0.5 }, { { rt.loss("ce"), 1 } }) end, "no loss term uses the teacher")
  T.raises(function()
    rt.fit{ student = rt.student("gpt", small), data = train, epochs = 1, on_policy = { lambda = 1 }, quiet = true }
  end, "give 'teacher'")
  T.check(not rt.exists(root .. "/bad/manifest.json"), "refused before the run folder is written")
end)

os.execute("rm -rf " .. root)
T.done("test_lm_distill")
