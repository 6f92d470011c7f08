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

-- rt.teacher(name, opts).  For "model", opts.student may be a live student:
-- the teacher gets its architecture, options and a copy of its weights.
function rt.teacher(name, opts)
  check_args("rt.teacher", name, opts)
  if type(opts) == "table" and opts.student ~= nil then
    if name ~= "model" then error("rt.teacher: 'student' is an option of the 'model' teacher only", 2) end
    local s = opts.student
    for k in pairs(opts) do
      if k ~= "student" then error(("rt.teacher: 'student' and '%s' do not go together"):format(k), 2) end
    end
    local t = util.call(c_teacher, "model", { arch = s:name(), options = rt.json_decode(s:options_json()),
                                             random_init = true })
    util.call(rt.copy_parameters, t, s)
    return t
  end
  return util.call(c_teacher, name, opts)
end
