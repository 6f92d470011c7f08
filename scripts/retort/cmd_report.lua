-- cmd_report.lua: retort report RUN_DIR... [--out FILE]
-- One folder: writes RUN_DIR/report.html (see report.lua).  Several: one
-- page for all of them (runs.lua), report.html in the current folder
-- unless --out names another.  Prints the page's path.
local rt = ...

rt.command{
  name = "report", usage = "report RUN_DIR...", help = "write report.html: charts, metrics, provenance (several runs: one page)",
  run = function(args)
    local dirs, out = {}, nil
    local i = 1
    while i <= #args do
      local a = args[i]
      if a == "--out" then
        i = i + 1
        out = args[i]
        if not out then error("--out needs a file name", 0) end
      elseif a == "--help" or a == "-h" then
        print("usage: retort report RUN_DIR... [--out FILE]\n\nRUN_DIR is a run folder (manifest.json) or a folder"
          .. " with summary.json\n(the demo's top-level folder). Writes one self-contained HTML page: RUN_DIR/report.html"
          .. "\nfor one folder; for several, one page with a colour per run, ./report.html.")
        return 0
      elseif a:match("^%-%-") then error("unknown option " .. a .. " (--out)", 0)
      else dirs[#dirs + 1] = (a:gsub("/+$", "")) end
      i = i + 1
    end
    if #dirs == 0 then error("needs a run folder (retort report RUN_DIR...)", 0) end
    if #dirs > 1 and not out then out = "report.html" end
    print(rt.report(#dirs == 1 and dirs[1] or dirs, { out = out }))
    return 0
  end,
}
