-- campaign.lua — bands of a message's fingerprint in the fleet's
-- campaign table (core/fingerprint.h's slots, summed over the hosts): each
-- band's senders' sketch (64 bits, one per account, ORed; an account's
-- bit from its `repeat`-th copy over the fleet, each account's copies
-- counted in field "a:ACCOUNT"), and the delivery outcomes of its copies
-- (all and refused, added); a band counts the copies of 4,096 senders at
-- most (a band many send, a footer, is not one campaign; its sketch is
-- full long before). A band is
-- forgotten once it is quiet for the window, as on a host. Called with
-- EVALSHA by src/store/redis.c for a fingerprinted message and for a
-- delivery outcome of one: its bands together on one server, one at a
-- time in a Cluster (a slot each). No decision waits for it: the host
-- merges the reply into its own table (cp_campaigns_merge).
--
-- KEYS    the bands ("cpc:{BAND}")
-- ARGV 1 the sender's bit (0-63; -1: an outcome, no sender), 2 copies
--      delivered, 3 of them refused, 4 the window (ms), 5 the sender
--      (an account's hash, hex), 6 the copies from which it counts
-- Returns {sketch low 32 bits, high 32 bits, sent, refused, the sender's
-- copies (0: none)} per band, one after the other.
local b, ds, db = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local ttl, who, rep = tonumber(ARGV[4]), 'a:' .. ARGV[5], tonumber(ARGV[6])
-- (what Redis holds may have been written by anyone: bounded)
local function num(x, lim)
  x = tonumber(x)
  if x == nil or x ~= x or x < 0 or x > lim then return 0 end
  return math.floor(x)
end
local out = {}
for j, k in ipairs(KEYS) do
  local v = redis.pcall('HMGET', k, 'lo', 'hi', 's', 'b', who)
  if v.err then -- (a key of another type, written by anyone: replaced)
    redis.call('DEL', k)
    v = {}
  end
  local lo, hi = bit.tobit(num(v[1], 4294967295)), bit.tobit(num(v[2], 4294967295))
  local n, sb = 0, b -- (the sender's bit, for this band)
  if sb >= 0 and not v[5] and redis.call('HLEN', k) >= 4100 then
    sb = -1 -- (a sender more than the band counts: not counted)
  end
  if sb >= 0 then -- a copy: the sender counts from its rep-th
    n = math.min(num(v[5], 1e9) + 1, 1000000)
    if n < rep then
    elseif sb >= 32 then
      hi = bit.bor(hi, bit.lshift(1, sb - 32))
    else
      lo = bit.bor(lo, bit.lshift(1, sb))
    end
  end
  local s, r = num(v[3], 65535) + ds, num(v[4], 65535) + db
  if r > s then r = s end
  if s > 65535 then s, r = math.floor(s / 2), math.floor(r / 2) end
  -- (stored unsigned, as the host reads them)
  if lo < 0 then lo = lo + 4294967296 end
  if hi < 0 then hi = hi + 4294967296 end
  if sb >= 0 then
    redis.call('HSET', k, 'lo', lo, 'hi', hi, 's', s, 'b', r, who, n)
  else
    redis.call('HSET', k, 'lo', lo, 'hi', hi, 's', s, 'b', r)
  end
  redis.call('PEXPIRE', k, ttl)
  local o = 5 * j
  out[o - 4], out[o - 3], out[o - 2], out[o - 1], out[o] = lo, hi, s, r, n
end
return out
