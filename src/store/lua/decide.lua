-- decide.lua — one decision of chokepoint's fleet mode, atomically, on the
-- Redis server's clock: set the account's state if detection moved it
-- (only from the state it had here: compare and set), read the states,
-- give back reservations, and unless the state refuses the mail, leak,
-- check and charge every rule (core/meter.c's cp_meter_apply, the
-- reference semantics). Called with EVALSHA by src/store/redis.c.
--
-- KEYS[1] the account's record (counters, the customer's state)
-- KEYS[2] the record of the state (the login), may equal KEYS[1]
-- KEYS[3] the login's habits (a string)
-- ARGV  1 nrules  2 refuse-states mask  3 scale-states mask
--       4 watch factor  5 recipient domain hash (0: none)
--       6 state change "FROM,TO" or ""  7 idle expiry (ms)  8 nrelease
--       then nrelease × (slot, units), then nrules × (slot, its numbers
--       packed as struct.unpack('<dddB') reads them: cap per ms window,
--       rate per ms, cost, flags: 1 enforce, 2 domain, 4 nocheck),
--       then the evidence: the score from which the fleet's is returned,
--       half-life (ms), floor, the version of it the host has, signals,
--       the index of signal `networks`, the request's network (0: none),
--       ngain, then ngain × (signal,
--       share, times, last (s)) this host's evidence gained, then the
--       habits this host knows (its evidence record, packed) or ""
-- Returns {own state, customer state, repeat, since (s), change refused,
--          denied rule (-1), over mask, new domain, created,
--          {level before cost...}, evidence, habits}: levels in fixed
--          point, 2^-20 units (integers; the host's copies are floats;
--          text from 4e12 units),
--          the costs being the host's own (a domain rule's: new domain);
--          evidence
--          is "" or, when the fleet's score is at least the one asked for,
--          "VERSION", or "VERSION SCORE TIME(ms) share times last ..." (each
--          signal's) when the host's version was not the fleet's; habits
--          "" or, when habits were given, the record they replace (the
--          last host's), for this host to merge
-- (Numbers are made into strings as little as possible: each costs more
-- than the rest of a step; doc/performance.md.)
local k, kd = KEYS[1], KEYS[2]
local band, tonumber, fmt, unpk = bit.band, tonumber, string.format, struct.unpack
local nr, refuse, scalem = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local wf, dh, tr = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local ttl, nrel = ARGV[7], tonumber(ARGV[8]) -- (ttl: as given, a string)
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local us = tm[2] -- now as a string, from TIME's own
if #us < 6 then us = string.rep('0', 6 - #us) .. us end
local nows = tm[1] .. string.sub(us, 1, 3)

-- the counters: f[3..] the fields of the slots named (releases first)
local f, slot = {'t', 'dm'}, {}
local nf = 2
local i = 9
local relv = {}
for _ = 1, nrel do
  local n = 's:' .. ARGV[i]
  if not slot[n] then nf = nf + 1; f[nf] = n; slot[n] = nf end
  relv[slot[n]] = tonumber(ARGV[i + 1])
  i = i + 2
end
local rs, rcap, rrate, rcost, rfl = {}, {}, {}, {}, {}
for j = 1, nr do
  local n = 's:' .. ARGV[i]
  if not slot[n] then nf = nf + 1; f[nf] = n; slot[n] = nf end
  rs[j] = slot[n]
  rcap[j], rrate[j], rcost[j], rfl[j] = unpk('<dddB', ARGV[i + 1])
  i = i + 2
end

-- the states and the counters, read at once (one HMGET when the account
-- is the login): o the state record's, got the account record's counters
local o, got, cst = nil, {}, 0
if k == kd then
  o = redis.call('HMGET', kd, 'st', 'ss', 'rp', 'es', 'et', 'ev', 'nw', unpack(f))
  for j = 1, nf do got[j] = o[7 + j] end
else
  o = redis.call('HMGET', kd, 'st', 'ss', 'rp', 'es', 'et', 'ev', 'nw')
  local a = redis.call('HMGET', k, 'st', unpack(f))
  cst = tonumber(a[1]) or 0
  for j = 1, nf do got[j] = a[1 + j] end
end

-- detection's change of the state (compare and set)
local ost, oss, orp = tonumber(o[1]) or 0, tonumber(o[2]) or 0, tonumber(o[3]) or 0
local lost = 0
if tr ~= '' then
  local from, to = string.match(tr, '^(%d+),(%d+)$')
  from, to = tonumber(from), tonumber(to)
  if ost == from then
    ost, oss = to, math.floor(now / 1000)
    if to == 3 and orp < 255 then orp = orp + 1 end
    redis.call('HSET', kd, 'st', ost, 'ss', tm[1], 'rp', orp)
  else
    lost = 1
  end
end
local eff = ost -- core/engine.c cp_state_deciding
if cst == 3 or cst == 4 then eff = cst elseif cst == 6 and ost ~= 4 then eff = 6 end
local effbit = 2 ^ eff

-- the login's evidence: the fleet's score es at et (ms), its version ev
-- (each gain adds one), and per signal N a field gN "share time(ms) times
-- last(s)"; this host's gain added
local T, hl, efl = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
local hv, nsig = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
local netsig, net, ng = tonumber(ARGV[i + 5]), ARGV[i + 6], tonumber(ARGV[i + 7])
i = i + 8
-- a number of the evidence, finite and bounded (what Redis holds may have
-- been written by anyone: "nan", "inf", 1e999 become 0)
local function fin(x, lim)
  x, lim = tonumber(x), lim or 1e7
  if x == nil or x ~= x or x > lim or x < -lim then return nil end
  return x
end
local es, et, evr = fin(o[4]), tonumber(o[5]) or now, ''
if et ~= et or et > now + 86400000 then et = now end
-- (a record made anew starts at a version of its time, not at 0: a host
-- that knew the lost one's does not take the new one for it)
local ver = tonumber(o[6]) or (now % 1000000007)
local knew = ver == hv -- the host had the fleet's evidence before its gain
if es and now > et then es = es * 2 ^ ((et - now) / hl) end
-- signal field x read as {share now, times, last}
local function sig(x)
  if not x then return {0, 0, 0} end
  local a, t, n, l = string.match(x, '^(%S+) (%S+) (%S+) (%S+)$')
  a, t = fin(a) or 0, tonumber(t) or now
  if t ~= t or t > now then t = now end
  if now > t then a = a * 2 ^ ((t - now) / hl) end
  n, l = fin(n, 4e9) or 0, fin(l, 4e9) or 0
  return {a, math.max(n, 0), math.max(l, 0)}
end
-- `networks` counts a network once an hour over the fleet: a host that
-- had not heard of it yet (the exchange lags a message) does not add it
-- again (nw: "network:ms ..." of the last hour's, eight at most)
local netdup, nw = false, nil
if ng > 0 and net ~= '0' then
  for j = 0, ng - 1 do
    if tonumber(ARGV[i + 4 * j]) == netsig then
      local kept = {}
      for e in string.gmatch(o[7] or '', '%S+') do
        local h, t = string.match(e, '^(%d+):(%d+)$')
        if h and now - tonumber(t) < 3600000 then
          if h == net then netdup = true end
          kept[#kept + 1] = e
        end
      end
      if not netdup then
        kept[#kept + 1] = net .. ':' .. nows
        if #kept > 8 then table.remove(kept, 1) end
      end
      nw = table.concat(kept, ' ')
    end
  end
end
if ng > 0 then
  local names = {}
  for j = 1, ng do names[j] = 'g' .. ARGV[i + 4 * (j - 1)] end
  local cur = redis.call('HMGET', kd, unpack(names))
  local h = {}
  es = es or 0
  for j = 1, ng do
    local v = sig(cur[j])
    local d, l = fin(ARGV[i + 1]) or 0, fin(ARGV[i + 3], 4e9) or 0
    local n = fin(ARGV[i + 2], 65535) or 0
    if netdup and tonumber(ARGV[i]) == netsig then d, n = 0, 0 end
    es = es + d
    v[1] = v[1] + d
    v[2] = math.min(v[2] + n, 4e9)
    if l > v[3] then v[3] = l end
    h[2 * j - 1] = names[j]
    h[2 * j] = fmt('%.17g %s %d %d', v[1], nows, v[2], v[3])
    i = i + 4
  end
  if es < efl then es = efl end
  ver = ver + 1
  h[2 * ng + 1], h[2 * ng + 2] = 'es', fmt('%.17g', es)
  h[2 * ng + 3], h[2 * ng + 4] = 'et', nows
  h[2 * ng + 5], h[2 * ng + 6] = 'ev', ver
  if nw then h[2 * ng + 7], h[2 * ng + 8] = 'nw', nw end
  redis.call('HSET', kd, unpack(h))
end
if es and es >= T and knew then
  evr = tostring(ver)
elseif es and es >= T then
  local names, out = {}, {ver, fmt('%.17g', es), nows}
  for j = 1, nsig do names[j] = 'g' .. (j - 1) end
  local cur = redis.call('HMGET', kd, unpack(names))
  for j = 1, nsig do
    local v = sig(cur[j])
    out[#out + 1] = fmt('%.9g %d %d', v[1], v[2], v[3])
  end
  evr = table.concat(out, ' ')
end
-- the habits: each host's record replaces the last host's, which goes
-- back to it to merge (so they converge; the merge is the host's)
local hab = ARGV[i]
if hab ~= '' then
  hab = redis.pcall('GET', KEYS[3]) -- (a key of another type: none)
  if type(hab) ~= 'string' then hab = '' end
  redis.call('SET', KEYS[3], ARGV[i], 'PX', ttl)
end

local created = 0
if not got[1] then created = 1 end
-- (what Redis holds may have been written by anyone: a time that is not
-- a number is now, a level that is not a finite number from 0 is 0 and
-- is not written back as it was read: L0[j] -1)
local t0 = tonumber(got[1]) or now
if t0 ~= t0 then t0 = now end
local L, L0 = {}, {}
for j = 3, nf do
  local v = tonumber(got[j])
  if v == nil or v ~= v or v < 0 or v > 1e300 then v, L0[j] = 0, -1 else L0[j] = v end
  L[j] = v
end
for j, r in pairs(relv) do
  if r > 0 then L[j] = L[j] - r; if L[j] < 0 then L[j] = 0 end end
end

local function keep()
  if ost == 0 and cst == 0 then
    redis.call('PEXPIRE', k, ttl)
    if k ~= kd then redis.call('PEXPIRE', kd, ttl) end
  else
    redis.call('PERSIST', k)
    if k ~= kd then redis.call('PERSIST', kd) end
  end
end
-- the levels written back: as read when they did not change
local function save(h)
  local m = #h
  for j = 3, nf do
    local v = L[j]
    m = m + 2
    h[m - 1] = f[j]
    if v == L0[j] and got[j] then h[m] = got[j]
    elseif v == 0 then h[m] = '0'
    else h[m] = fmt('%.17g', v) end
  end
  if m > 0 then redis.call('HSET', k, unpack(h)) end
  keep()
end

if nr == 0 or band(refuse, effbit) ~= 0 then
  save({})
  return {ost, cst, orp, oss, lost, -1, 0, 0, created, {}, evr, hab}
end
local scale = 1
if band(scalem, effbit) ~= 0 then scale = wf end

-- recipient domains: 8 entries of a hash's high bits and a 4-bit count,
-- then the next to replace; ds the entries as stored (kept when the same)
local dom, ds, dnext = {0, 0, 0, 0, 0, 0, 0, 0}, {}, 0
if got[2] then
  local w, s = {}, {}
  for x in string.gmatch(got[2], '%d+') do s[#s + 1] = x; w[#w + 1] = tonumber(x) end
  if #w == 9 then dom = w; ds = s; dnext = w[9]; dom[9] = nil end
end
local d0, n0 = {unpack(dom)}, dnext
local at, dhi = -1, dh - dh % 16
if dh ~= 0 then
  for j = 1, 8 do
    local e = dom[j]
    if e ~= 0 and e - e % 16 == dhi then at = j; break end
  end
end
local newdom = 0
if dh ~= 0 and at < 0 then newdom = 1 end

local dt = now - t0
if dt < 0 then dt = 0 end
local lv, cost, nl = {}, {}, {}
local denied, over = -1, 0
for j = 1, nr do
  local fl, s = rfl[j], rs[j]
  local l = L[s] - dt * rrate[j] * scale
  if l < 0 then l = 0 end
  local c = rcost[j]
  if band(fl, 2) ~= 0 then c = newdom end
  lv[j], cost[j], nl[s] = l, c, l
  if band(fl, 4) == 0 and c > 0 and l + c > rcap[j] * scale + 1e-6 then
    over = over + 2 ^ (j - 1)
    if band(fl, 1) ~= 0 and denied < 0 then denied = j - 1 end
  end
end
for j = 3, nf do L[j] = nl[j] or 0 end
if denied < 0 then
  for j = 1, nr do L[rs[j]] = L[rs[j]] + cost[j] end
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
      dom[low + 1] = dhi + 1
      dnext = (low + 1) % 8
    end
  end
end
local h = {'t', nows}
if #ds ~= 9 or dnext ~= n0 or at > 0 or newdom == 1 then
  local out = {}
  for j = 1, 8 do
    if dom[j] == d0[j] and ds[j] then out[j] = ds[j] else out[j] = fmt('%d', dom[j]) end
  end
  if dnext == n0 and ds[9] then out[9] = ds[9] else out[9] = fmt('%d', dnext) end
  h[3], h[4] = 'dm', table.concat(out, ' ')
end
save(h)
-- the levels before the cost, in fixed point (2^-20 units); one too
-- large for that (4e12 units and more: a bytes limit of terabytes) as
-- text
local slv = {}
for j = 1, nr do
  local x = lv[j]
  if x < 4e12 then slv[j] = math.floor(x * 1048576 + 0.5) else slv[j] = fmt('%.17g', x) end
end
return {ost, cst, orp, oss, lost, denied, over, newdom, created, slv, evr, hab}
