-- test_gpt.lua: the gpt student on text (issue 11): generation is
-- reproducible and the key/value cache gives the tokens of full forwards;
-- rt.distill trains it by token-level KD from a gpt teacher on a text
-- dataset ([N, T] i32 next-token targets, [N, T, V] outputs); rt.evaluate
-- scores positions and reports bits per byte; vocabularies that differ
-- are refused with both sizes.
local T = dofile("tests/lua/t.lua")
local rt = require "retort"

local function corpus()
  local dir = T.tmpdir()
  local f = assert(io.open(dir .. "/a.txt", "w"))
  for i = 1, 200 do f:write(("the cat %d sat on the mat. "):format(i % 7)) end
  f:close()
  return dir
end

local small = { width = 16, heads = 2, layers = 2, context = 12, seed = 3 }

T.test("generation: same seed, same text; cached equals uncached; another seed differs", function()
  local s = rt.student("gpt", small)
  for _, o in ipairs{ { temperature = 1 }, { temperature = 0.8, top_k = 20 }, { temperature = 1, top_p = 0.9 },
                      { temperature = 0 } } do
    o.max_tokens, o.seed = 30, 5 -- past the context of 12: the cache is rebuilt from the window
    local a, ia = rt.generate(s, "the cat", o)
    local b = rt.generate(s, "the cat", o)
    o.cache = false
    local c, ic = rt.generate(s, "the cat", o)
    T.check(ia.cached and not ic.cached, "paths")
    T.check(#ia.ids == 30, "equal")
    T.check(a == b, "same seed, same tokens")
    T.check(a == c, ("cached %q vs uncached %q"):format(a, c))
    T.check(ia.tokens_per_s == nil or ia.tokens_per_s > 0, "tokens/s")
  end
  local a = rt.generate(s, "the cat", { max_tokens = 30, seed = 5 })
  local b = rt.generate(s, "the cat", { max_tokens = 30, seed = 6 })
  T.check(a ~= b, "another seed, other tokens")
  T.raises(function() rt.generate(s, { 300 }, { max_tokens = 2 }) end, "outside the vocabulary")
  T.raises(function() rt.generate(s, "x", { top_p = 0 }) end, "top_p")
end)

T.test("a checkpoint generates the same text through rt.generate and retort generate", function()
  local s = rt.student("gpt", small)
  local dir = T.tmpdir()
  s:save(dir .. "/m.safetensors")
  local a = rt.generate(s, "the", { max_tokens = 8, seed = 2, temperature = 0 })
  local b = rt.generate(dir .. "/m.safetensors", "the", { max_tokens = 8, seed = 2, temperature = 0 })
  T.check(a == b, "the loaded checkpoint generates the same text")
  local BUILD = os.getenv("RETORT_TEST_BUILD") or "build"
  local p = io.popen(("%s/bin/retort generate %s/m.safetensors --prompt the --max-tokens 8 --temperature 0 2>%s/err")
    :format(BUILD, dir, dir))
  local out = p:read("a")
  p:close()
  T.check(out == "the" .. a .. "\n", ("retort generate printed %q"):format(out))
  local err = io.open(dir .. "/err"):read("a")
  T.check(err:find("8 tokens in") and err:find("tokens/s"), "tokens/s on stderr: " .. err)
  os.execute("rm -rf " .. dir)
end)

T.test("text data: windows of next tokens, reproducible from the seed", function()
  local dir = corpus()
  local tr, va = rt.data.text{ path = dir, context = 12, windows = 40, seed = 1 }
  local tr2 = rt.data.text{ path = dir, context = 12, windows = 40, seed = 1 }
  T.check(tr:x():shape()[2] == 12, "equal")
  T.check(tr:y():shape()[2] == 12, "equal")
  local x, y = tr:x():totable(), tr:y():totable()
  T.check(x[1][2] == y[1][1], "y is x shifted by one")
  local same, x2 = true, tr2:x():totable()
  for i = 1, #x do for j = 1, 12 do same = same and x[i][j] == x2[i][j] end end
  T.check(same, "same seed, same windows")
  local tr3 = rt.data.text{ path = dir, context = 12, windows = 40, seed = 2 }
  T.check(tr3:x():totable()[1][1] ~= nil, "another seed loads")
  T.check(va:size() > 0, "a validation split")
  os.execute("rm -rf " .. dir)
end)

T.test("token-level KD through rt.distill on text; evaluate reports bpb; vocabularies must match", function()
  local dir = corpus()
  local tr, va = rt.data.text{ path = dir, context = 12, windows = 64, seed = 1 }
  local teacher = rt.teacher("model", { arch = "gpt", options = small, random_init = true })
  local student = rt.student("gpt", { width = 8, heads = 2, layers = 1, context = 12, seed = 4 })
  local before = rt.evaluate(student, va, { quiet = true })
  T.check(before.bpb and before.bpb > 0, "bpb")
  T.check(math.abs(before.bpb - before.ce / math.log(2)) < 1e-12, "bpb = ce / ln 2")
  T.check(before.tokens == va:size() * 12, "equal")
  local r = rt.distill{ teacher = teacher, student = student, data = tr, eval = va,
                        loss = { { rt.loss("kd", { temperature = 1 }), 0.5, name = "kd" }, { rt.loss("ce"), 0.5, name = "ce" } }, epochs = 3, batch = 16,
                        quiet = true, cache_teacher = false, optimizer = rt.optim.adam{ lr = 0.01 } }
  T.check(r ~= nil, "distill ran")
  local after = rt.evaluate(student, va, { teacher = teacher, quiet = true })
  T.check(after.bpb < before.bpb, ("bpb fell: %.3f -> %.3f"):format(before.bpb, after.bpb))
  T.check(after.agreement ~= nil and after.kl ~= nil, "fidelity per token")
  -- the default cache_teacher = true: per-token logits are not cached, the run trains
  local s2 = rt.student("gpt", { width = 8, heads = 2, layers = 1, context = 12, seed = 4 })
  rt.distill{ teacher = teacher, student = s2, data = tr, loss = { { rt.loss("kd"), 1, name = "kd" } }, epochs = 1,
              batch = 16, quiet = true, optimizer = rt.optim.adam{ lr = 0.01 } }
  T.check(rt.evaluate(s2, va, { quiet = true }).bpb < before.bpb, "trained with the default cache_teacher")
  local other = rt.teacher("model", { arch = "gpt", options = { vocab = 300, width = 16, heads = 2, layers = 1,
                                                                  context = 12 }, random_init = true })
  T.raises(function()
    rt.distill{ teacher = other, student = student, data = tr, loss = { { rt.loss("kd"), 1, name = "kd" } }, epochs = 1, batch = 16,
                quiet = true, cache_teacher = false }
  end, "vocabulary of 300 tokens, student 'gpt' of 256")
  os.execute("rm -rf " .. dir)
end)

T.test("the fortunes corpus: both splits, its licence and origin with the data", function()
  local tr, va = rt.data.fortunes{ context = 16, windows = 4, val_windows = 3 }
  T.check(tr:size() == 4 and va:size() == 3, "windows")
  local info = rt.data.info[tr]
  T.check(info.license:find("BSD") and info.origin:find("fortunes"), "licence and origin")
  T.check(info.text.files > 10 and info.text.vocab == 256, "files read, bytes")
end)

T.done("test_gpt")
