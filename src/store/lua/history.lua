-- history.lua — an account's state changes over the whole fleet, newest
-- first: each host adds the changes it records (with its incident number
-- and its name), a person's `history` on any host reads them. Called with
-- EVAL by src/store/redis.c (rarely: state changes and a person's reads).
--
-- KEYS[1] the list ("cpx:{KEY}LOGIN")
-- ARGV 1 "add": 2 the row, 3 rows kept, 4 expiry (ms)
--      "get": 2 rows wanted
-- Returns for "add" the rows kept, for "get" the rows, newest first.
local k, mode = KEYS[1], ARGV[1]
if mode == 'add' then
  redis.call('LPUSH', k, ARGV[2])
  redis.call('LTRIM', k, 0, tonumber(ARGV[3]) - 1)
  redis.call('PEXPIRE', k, tonumber(ARGV[4]))
  return redis.call('LLEN', k)
end
return redis.call('LRANGE', k, 0, tonumber(ARGV[2]) - 1)
