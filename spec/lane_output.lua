-- busted output for one spec file run by spec/run.lua (make test): the
-- progress characters go to stdout as plainTerminal prints them; its
-- closing summary and the failures' descriptions go to the file named by
-- $MPROC_SPEC_REPORT, which the runner merges with the other files'.
return function(options)
  local busted = require "busted"
  local handler = require "busted.outputHandlers.plainTerminal"(options)
  -- before plainTerminal's own suite end, which writes with io.write
  busted.subscribe({ "suite", "end" }, function()
    io.output(assert(os.getenv("MPROC_SPEC_REPORT"), "MPROC_SPEC_REPORT is not set"))
    return nil, true
  end, { priority = 1 })
  return handler
end
