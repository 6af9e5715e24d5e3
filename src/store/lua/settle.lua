-- settle.lua — an END-OF-MESSAGE settled on its host within what its RCPTs
-- reserved (src/daemon/fleet.c share_settle): each counter of the account
-- moves by the message's final cost less what was reserved. Only in a
-- record that is there: one gone since (evicted, deleted) took its levels
-- with it, and one made here would have no expiry (it would be kept for
-- good). Called with EVALSHA by src/store/redis.c.
--
-- KEYS[1] the account's record
-- ARGV    pairs of (slot, units: more charged, or less given back)
-- Returns the number of counters moved (0: no record)
local k = KEYS[1]
if redis.call('EXISTS', k) == 0 then return 0 end
for i = 1, #ARGV - 1, 2 do
  redis.call('HINCRBYFLOAT', k, 's:' .. ARGV[i], ARGV[i + 1])
end
return math.floor(#ARGV / 2)
