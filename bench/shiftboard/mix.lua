-- wrk script for shiftboard: a realistic mix of one shift created for every
-- two listings of the user's own shifts. Each wrk thread is its own user,
-- logged in once before the run by load.sh, which passes the bearer tokens
-- in SB_TOKENS (space separated). Non-2xx answers are counted and printed
-- at the end, so a run that failed cannot pass for a fast one.
local threads = {}
local tokens = {}
for t in string.gmatch(os.getenv("SB_TOKENS") or "", "%S+") do table.insert(tokens, t) end

function setup(thread)
  table.insert(threads, thread)
  thread:set("token", tokens[(#threads - 1) % #tokens + 1])
end

function init(args)
  n = 0
  bad = 0
  created = 0
end

function request()
  n = n + 1
  local h = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  if n % 3 == 0 then
    return wrk.format("POST", "/api/shifts", h,
      '{"title":"load","starts_at":"2026-11-24T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}')
  end
  return wrk.format("GET", "/api/shifts?limit=20", h)
end

function response(status, headers, body)
  if status == 201 then created = created + 1 end
  if status >= 300 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local b, c = 0, 0
  for _, t in ipairs(threads) do
    b = b + t:get("bad")
    c = c + t:get("created")
  end
  io.write(string.format("non-2xx: %d, shifts created: %d\n", b, c))
  io.write(string.format("latency p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
