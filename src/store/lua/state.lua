-- state.lua — read or set one account's state in chokepoint's fleet mode,
-- on the Redis server's clock. Called with EVALSHA by src/store/redis.c for
-- a person's command (any host), and to hand over a state change made
-- while Redis could not be reached.
--
-- KEYS[1] the account's record (its customer's state), KEYS[2] the record
-- of the state (may equal KEYS[1])
-- ARGV 1 mode: "get"; "set" (a person: unconditional); "merge" (a change
--        made while Redis was unreachable: applied if the state is still
--        FROM, or if it refuses mail (TO: THROTTLED, BLOCKED) where the
--        state here does not: a block is never lost)
--      2 TO  3 FROM  4 idle expiry (ms)
-- Returns {own state, customer state, repeat, since (s), applied, known:
--          1 if either record exists (the fleet has seen the account),
--          for "get": the account's counters {slot, level, ...} and the
--          time (ms) they were leaked to, else {} and "0"}
local k, kd = KEYS[1], KEYS[2]
local mode, to, from, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local o = redis.call('HMGET', kd, 'st', 'ss', 'rp')
local ost, oss, orp = tonumber(o[1]) or 0, tonumber(o[2]) or 0, tonumber(o[3]) or 0
local cst = 0
if k ~= kd then cst = tonumber(redis.call('HGET', k, 'st')) or 0 end
local applied = 0
if mode == 'set' or (mode == 'merge' and (ost == from or
    ((to == 2 or to == 3) and (ost == 0 or ost == 1 or ost == 5)))) then
  if ost ~= to then
    local tm = redis.call('TIME')
    ost, oss = to, tonumber(tm[1])
    if to == 3 and orp < 255 then orp = orp + 1 end
    redis.call('HSET', kd, 'st', ost, 'ss', oss, 'rp', orp)
    -- a release (PROBATION) is a fresh start: the fleet's evidence that
    -- led to the block is spent, as it is here (cp_engine_set_state)
    if to == 5 then
      local f = {'es', 'et'}
      for j = 0, 31 do f[#f + 1] = 'g' .. j end
      redis.call('HDEL', kd, unpack(f))
      redis.call('HINCRBY', kd, 'ev', 1) -- what the hosts had is stale
    end
    if ost == 0 then redis.call('PEXPIRE', kd, ttl) else redis.call('PERSIST', kd) end
    applied = 1
  end
end
local known = redis.call('EXISTS', k, kd)
if known > 0 then known = 1 end
local levels, t = {}, '0'
if mode == 'get' and known == 1 then
  local h = redis.call('HGETALL', k)
  for i = 1, #h, 2 do
    if h[i] == 't' then
      t = h[i + 1]
    elseif string.sub(h[i], 1, 2) == 's:' then
      levels[#levels + 1] = string.sub(h[i], 3)
      levels[#levels + 1] = h[i + 1]
    end
  end
end
return {ost, cst, orp, oss, applied, known, levels, t}
