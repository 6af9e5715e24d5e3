-- decide.lua — one decision of chokepoint's fleet mode, atomically, on the
-- Redis server's clock: set the account's state if detection moved it
-- (only from the state it had here: compare and set), read the states,
-- give back reservations, and unless the state refuses the mail, leak,
-- check and charge every rule (core/meter.c's cp_meter_apply, the
-- reference semantics). Called with EVALSHA by src/store/redis.c.
--
-- KEYS[1] the account's record (counters, the customer's state)
-- KEYS[2] the record of the state (the login), may equal KEYS[1]
-- ARGV  1 nrules  2 refuse-states mask  3 scale-states mask
--       4 watch factor  5 recipient domain hash (0: none)
--       6 state change "FROM,TO" or ""  7 idle expiry (ms)  8 nrelease
--       then nrelease × (slot, units), then nrules × (slot, cap per ms
--       window, rate per ms, cost, flags: 1 enforce, 2 domain, 4 nocheck)
-- Returns {own state, customer state, repeat, since (s), change refused,
--          denied rule (-1), over mask, new domain, created,
--          {level before cost...}, {cost...}}
local k, kd = KEYS[1], KEYS[2]
local nr, refuse, scalem = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wf, dh, tr = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local ttl, nrel = tonumber(ARGV[7]), tonumber(ARGV[8])
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local function has(mask, s) return math.floor(mask / 2 ^ s) % 2 == 1 end

-- the states, and detection's change (compare and set)
local o = redis.call('HMGET', kd, 'st', 'ss', 'rp')
local ost, oss, orp = tonumber(o[1]) or 0, tonumber(o[2]) or 0, tonumber(o[3]) or 0
local lost = 0
if tr ~= '' then
  local from, to = string.match(tr, '^(%d+),(%d+)$')
  from, to = tonumber(from), tonumber(to)
  if ost == from then
    ost, oss = to, math.floor(now / 1000)
    if to == 3 and orp < 255 then orp = orp + 1 end
    redis.call('HSET', kd, 'st', ost, 'ss', oss, 'rp', orp)
  else
    lost = 1
  end
end
local cst = 0
if k ~= kd then cst = tonumber(redis.call('HGET', k, 'st')) or 0 end
local eff = ost -- core/engine.c cp_state_deciding
if cst == 3 or cst == 4 then eff = cst elseif cst == 6 and ost ~= 4 then eff = 6 end

-- the counters
local i, rel, rules, names, idx = 9, {}, {}, {}, {}
local function name(n) if not idx[n] then names[#names + 1] = n; idx[n] = #names end end
for _ = 1, nrel do rel[ARGV[i]] = tonumber(ARGV[i + 1]); name(ARGV[i]); i = i + 2 end
for j = 1, nr do
  rules[j] = {ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]),
              tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])}
  name(ARGV[i]); i = i + 5
end
local f = {'t', 'dm'}
for j = 1, #names do f[#f + 1] = 's:' .. names[j] end
local got = redis.call('HMGET', k, unpack(f))
local created = 0
if not got[1] then created = 1 end
local t0 = tonumber(got[1]) or now
local L = {}
for j = 1, #names do L[names[j]] = tonumber(got[j + 2]) or 0 end
for n, r in pairs(rel) do if r > 0 then L[n] = math.max(0, L[n] - r) end end

local function fmt(x) return string.format('%.17g', x) end
local function keep()
  if ost == 0 and cst == 0 then
    redis.call('PEXPIRE', k, ttl)
    if k ~= kd then redis.call('PEXPIRE', kd, ttl) end
  else
    redis.call('PERSIST', k)
    if k ~= kd then redis.call('PERSIST', kd) end
  end
end
local function save(extra)
  local h = extra
  for n, v in pairs(L) do h[#h + 1] = 's:' .. n; h[#h + 1] = fmt(v) end
  if #h > 0 then redis.call('HSET', k, unpack(h)) end
  keep()
end

if nr == 0 or has(refuse, eff) then
  save({})
  return {ost, cst, orp, oss, lost, -1, 0, 0, created, {}, {}}
end
local scale = 1
if has(scalem, eff) then scale = wf end

-- recipient domains: 8 entries of a hash's high bits and a 4-bit count
local dom = {}
local dnext = 0
for w in string.gmatch(got[2] or '', '%d+') do dom[#dom + 1] = tonumber(w) end
if #dom == 9 then dnext = dom[9]; dom[9] = nil else dom = {0, 0, 0, 0, 0, 0, 0, 0} end
local at = -1
if dh ~= 0 then
  for j = 1, 8 do
    if dom[j] ~= 0 and dom[j] - dom[j] % 16 == dh - dh % 16 then at = j; break end
  end
end
local newdom = 0
if dh ~= 0 and at < 0 then newdom = 1 end

local lv, cost, nl = {}, {}, {}
local denied, over = -1, 0
for j = 1, nr do
  local r = rules[j]
  local cap, rate = r[2] * scale, r[3] * scale
  local dt = now - t0
  if dt < 0 then dt = 0 end
  local l = L[r[1]] - dt * rate
  if l < 0 then l = 0 end
  local c = r[4]
  if has(r[5], 1) then c = newdom end
  lv[j], cost[j], nl[r[1]] = l, c, l
  if not has(r[5], 2) and c > 0 and l + c > cap + 1e-6 then
    over = over + 2 ^ (j - 1)
    if has(r[5], 0) and denied < 0 then denied = j - 1 end
  end
end
for n, _ in pairs(L) do L[n] = nl[n] or 0 end
if denied < 0 then
  for j = 1, nr do L[rules[j][1]] = L[rules[j][1]] + cost[j] end
  if dh ~= 0 then
    if at > 0 then
      if dom[at] % 16 == 15 then
        for j = 1, 8 do dom[j] = dom[j] - dom[j] % 16 + math.floor((dom[j] % 16) / 2) end
      end
      dom[at] = dom[at] + 1
    else
      local low = dnext % 8
      for q = 1, 7 do
        local j = (dnext + q) % 8
        if dom[j + 1] % 16 < dom[low + 1] % 16 then low = j end
      end
      dom[low + 1] = dh - dh % 16 + 1
      dnext = (low + 1) % 8
    end
  end
end
local d = {}
for j = 1, 8 do d[j] = string.format('%d', dom[j]) end
d[9] = tostring(dnext)
save({'t', now, 'dm', table.concat(d, ' ')})
local slv, sc = {}, {}
for j = 1, nr do slv[j] = fmt(lv[j]); sc[j] = fmt(cost[j]) end
return {ost, cst, orp, oss, lost, denied, over, newdom, created, slv, sc}
