-- wrk script: replays pre-signed Stripe webhook deliveries, each once per run.
-- Used by `cargo bench --bench ledger -- ingest`; run by hand as
--   wrk -t2 -c16 -d8s --latency -s bench/wrk-webhook.lua http://127.0.0.1:3000 -- FILE THREADS
-- FILE holds one delivery a line: the Stripe-Signature value, a tab, the body (no tab or
-- newline in it). Thread k of THREADS sends lines k, k + THREADS, ...; past its last line it
-- starts again (the service answers those as duplicates).
local counter = 0

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
end

local deliveries = {}
local next_delivery = 1

function init(args)
  local path, threads = args[1], tonumber(args[2])
  local n = 0
  for line in io.lines(path) do
    if n % threads == index then
      local tab = line:find("\t", 1, true)
      deliveries[#deliveries + 1] = { line:sub(1, tab - 1), line:sub(tab + 1) }
    end
    n = n + 1
  end
end

function request()
  local delivery = deliveries[next_delivery]
  next_delivery = next_delivery % #deliveries + 1
  return wrk.format("POST", "/api/billing/webhook", {
    ["Content-Type"] = "application/json",
    ["Stripe-Signature"] = delivery[1],
  }, delivery[2])
end
