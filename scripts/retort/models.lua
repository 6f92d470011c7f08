-- models.lua: constructors with Lua conveniences over the C ones.
local rt = ...
local util = rt.util
local c_student, c_teacher, c_loss = rt.student, rt.teacher, rt.loss

-- The arguments every constructor takes; the C function would say "bad
-- argument #2 to '?'", without its own name.
local function check_args(what, name, opts)
  if type(name) ~= "string" then error(("%s: the plugin name must be a string, got %s"):format(what, type(name)), 3) end
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: the options must be a table, got %s"):format(what, type(opts)), 3)
  end
end

function rt.student(name, opts)
  check_args("rt.student", name, opts)
  return util.call(c_student, name, opts)
end
function rt.loss(name, opts)
  check_args("rt.loss", name, opts)
  return util.call(c_loss, name, opts)
end

-- rt.teacher(name, opts), or rt.teacher(net) for a live student net, the
-- same as rt.teacher("model", {student = net}): the teacher gets net's
-- architecture, options and a copy of its weights (later training of net
-- does not change it).  Nothing is written to disk.  The teacher's option
-- 'student' holds the sha256 of the weights (rt.weights_sha256), and
-- when net was trained by rt.fit/rt.distill with out = DIR in this
-- process and has not changed since, the manifests of runs that use the
-- teacher name DIR, its manifest's sha256 and DIR/last.safetensors
-- (checked to hold the same weights): see rt.teacher_lineage.
function rt.teacher(name, opts)
  if type(name) == "userdata" then
    if opts ~= nil then error("rt.teacher(net) takes the student alone", 2) end
    name, opts = "model", { student = name }
  end
  check_args("rt.teacher", name, opts)
  if type(opts) == "table" and opts.student ~= nil and type(opts.student) ~= "string" then
    if name ~= "model" then error("rt.teacher: 'student' is an option of the 'model' teacher only", 2) end
    local s = opts.student
    for k in pairs(opts) do
      if k ~= "student" then error(("rt.teacher: 'student' and '%s' do not go together"):format(k), 2) end
    end
    if type(s) ~= "userdata" or not pcall(s.kind, s) or s:kind() ~= "student" then
      error("rt.teacher: 'student' must be a student (rt.student)", 2)
    end
    local sha = util.call(rt.weights_sha256, s)
    local t = util.call(c_teacher, "model", { arch = s:name(), options = rt.json_decode(s:options_json()),
                                             student = sha })
    util.call(rt.copy_parameters, t, s)
    rt.note_teacher(t, s, sha)
    return t
  end
  return util.call(c_teacher, name, opts)
end
