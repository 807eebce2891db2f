-- POST /api/v1/login as an OAuth2 password grant, sent as a form, with the credentials in
-- BENCH_EMAIL and BENCH_PASSWORD (kept out of wrk's command line, and so out of `ps` and the
-- benchmark's summary).
--
-- Counts the answers by status and prints them when the run ends, one `status <code>: <n>`
-- line each: a login that is refused or throttled answers fast, and would otherwise pass for
-- throughput.

local function form_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

local email = os.getenv("BENCH_EMAIL")
local password = os.getenv("BENCH_PASSWORD")
if email == nil or email == "" or password == nil or password == "" then
  io.stderr:write("login.lua: set BENCH_EMAIL and BENCH_PASSWORD to an account's credentials\n")
  os.exit(1)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=password&username=" .. form_escape(email)
  .. "&password=" .. form_escape(password)

-- Each wrk thread runs its own Lua state; the main state keeps the threads so that done()
-- can collect their counts.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- A global, not a local, because thread:get reads globals.
statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local totals = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
