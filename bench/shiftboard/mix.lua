-- wrk script for shiftboard: each wrk thread logs in once as its own user
-- (registered by load.sh), then sends a realistic mix: one shift created for
-- every two listings of the user's shifts. Non-2xx answers are counted and
-- printed at the end, so a run that failed cannot pass for a fast one.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("user", "load" .. counter)
  table.insert(threads, thread)
end

function init(args)
  token = nil
  login_sent = false
  n = 0
  bad = 0
  created = 0
end

local body_user = '{"name":"%s","password":"load-password"}'

function request()
  if not token then
    -- one login a thread (argon2id is slow on purpose); the thread's other
    -- connections ask for /health until the token is there
    if login_sent then return wrk.format("GET", "/health") end
    login_sent = true
    return wrk.format("POST", "/api/login", {["Content-Type"] = "application/json"},
                      string.format(body_user, user))
  end
  n = n + 1
  local h = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  if n % 3 == 0 then
    return wrk.format("POST", "/api/shifts", h,
      '{"title":"load","starts_at":"2026-11-24T09:00:00Z","ends_at":"2026-11-24T17:00:00Z"}')
  end
  return wrk.format("GET", "/api/shifts?limit=20", h)
end

function response(status, headers, body)
  if not token then
    if status == 200 then token = string.match(body, '"token":"(%x+)"') end
    if status ~= 200 then bad = bad + 1 end
    return
  end
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
