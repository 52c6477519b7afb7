"""The Lua scripts of the risk ledger (`s3.adapters.redis_risk`). Every script declares all its
keys, which share the `{risk}` hash tag under a cluster, so each runs in one slot."""

# -- Lua ------------------------------------------------------------------------------------------
# Shared helpers, prepended to every script. `units` is the exact parse described above (nil for
# anything that is not a plain non-negative decimal in range: a reservation then fails closed);
# `money` prints units back with 8 decimals; `count` parses a concurrency counter.
_PRELUDE = """
local SCALE = 100000000
local MAX_UNITS = 9007199254740991

local function units(raw)
  if not raw then return 0 end
  local ip, fp = string.match(raw, '^%s*%+?(%d*)%.?(%d*)%s*$')
  if ip == nil or (ip == '' and fp == '') then return nil end
  ip = string.gsub(ip, '^0+', '')
  if #ip > 8 then return nil end
  local u = (tonumber(ip) or 0) * SCALE + tonumber(string.sub(fp .. '00000000', 1, 8))
  if string.find(string.sub(fp, 9), '[1-9]') then u = u + 1 end
  if u > MAX_UNITS then return nil end
  return u
end

local function money(u)
  local q = math.floor(u / SCALE)
  local r = u - q * SCALE
  if r < 0 then q = q - 1; r = r + SCALE elseif r >= SCALE then q = q + 1; r = r - SCALE end
  return string.format('%d.%08d', q, r)
end

local function count(raw)
  if not raw then return 0 end
  local n = string.match(raw, '^%s*%+?(%d+)%s*$')
  if n == nil or #n > 15 then return nil end
  return tonumber(n)
end

local function int(n) return string.format('%d', n) end

-- Frees the entry's amount and slot and marks it released. A counter is never taken below zero
-- and an unreadable one is left alone: self-heal recomputes both from the ledger.
local function budget_key(market, fut, spot)
  if market == 'FUT' then return fut elseif market == 'SPOT' then return spot end
  return false
end

local function release_entry(id, e, ledger, pending, released, budget, conc, reason, now)
  local before = e.state
  local inuse = budget and units(redis.call('GET', budget))
  if inuse then
    redis.call('SET', budget, money(math.max(0, inuse - (units(e.amount) or 0))))
  end
  local c = count(redis.call('GET', conc))
  if c ~= nil then redis.call('SET', conc, int(math.max(0, c - 1))) end
  e.state = 'released'
  e.released_from = before
  e.released_ts = now
  e.reason = reason
  local out = cjson.encode(e)
  redis.call('HSET', ledger, id, out)
  redis.call('ZREM', pending, id)
  redis.call('ZADD', released, int(now), id)
  return out
end
"""

# KEYS: ledger, pending, budget, concurrency, symbols.
# ARGV: intent_id, market, symbol, amount_units, max_units, limit, now_ms.
# The ledger is written first: if a later write failed (a key of the wrong type), the counters
# would lag the ledger and self-heal raises them, the safe direction.
_RESERVE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then return {'replay', raw, redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4])} end
local amount, maxu, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local inuse_raw = redis.call('GET', KEYS[3])
local conc_raw = redis.call('GET', KEYS[4])
local inuse, conc = units(inuse_raw), count(conc_raw)
if inuse == nil or inuse + amount > maxu then
  return {'refused_budget', false, inuse_raw, conc_raw}
end
if conc == nil or conc >= limit then return {'refused_concurrency', false, inuse_raw, conc_raw} end
local entry = cjson.encode({intent_id = ARGV[1], market = ARGV[2], symbol = ARGV[3],
  amount = money(amount), state = 'pending', ts = tonumber(ARGV[7])})
local new_inuse, new_conc = money(inuse + amount), int(conc + 1)
redis.call('HSET', KEYS[1], ARGV[1], entry)
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
redis.call('SET', KEYS[3], new_inuse)
redis.call('SET', KEYS[4], new_conc)
redis.call('SADD', KEYS[5], ARGV[3])
return {'reserved', entry, new_inuse, new_conc}
"""

# KEYS: ledger, pending. ARGV: intent_id, now_ms.
_COMMIT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'unknown'} end
local e = cjson.decode(raw)
if e.state == 'committed' then return {'already_committed', raw} end
if e.state ~= 'pending' then return {'refused_released', raw} end
e.state = 'committed'
e.committed_ts = tonumber(ARGV[2])
local out = cjson.encode(e)
redis.call('HSET', KEYS[1], ARGV[1], out)
redis.call('ZREM', KEYS[2], ARGV[1])
return {'committed', out}
"""

# KEYS: ledger, pending, released, fut budget, spot budget, concurrency(symbol).
# ARGV: intent_id, reason, now_ms, symbol (whose counter KEYS[6] is; checked against the entry).
_RELEASE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return {'unknown'} end
local e = cjson.decode(raw)
if e.state == 'released' then return {'already_released', raw} end
if e.symbol ~= ARGV[4] then return {'wrong_symbol', raw} end
local budget = budget_key(e.market, KEYS[4], KEYS[5])
local before = e.state
local out = release_entry(ARGV[1], e, KEYS[1], KEYS[2], KEYS[3], budget, KEYS[6], ARGV[2],
  tonumber(ARGV[3]))
return {'released', out, budget and redis.call('GET', budget), redis.call('GET', KEYS[6]), before}
"""

# KEYS: ledger, pending, released, fut budget, spot budget, symbols, concurrency(s) for ARGV[4..].
# ARGV: now_ms, cutoff_ms (pending older than this is stale), reason, symbols...
# Answers {'retry', missing symbols} without writing anything when a live entry's symbol has no
# counter key among KEYS; else repairs the indexes, sets the counters to what the ledger says,
# then releases stale pending entries (from correct counters), and answers {'ok', corrections}.
_HEAL = """
local now, cutoff = tonumber(ARGV[1]), tonumber(ARGV[2])
local conc_key = {}
for i = 4, #ARGV do conc_key[ARGV[i]] = KEYS[i + 3] end
local flat = redis.call('HGETALL', KEYS[1])
local entries, ids, missing, miss = {}, {}, {}, {}
for i = 1, #flat, 2 do
  local ok, e = pcall(cjson.decode, flat[i + 1])
  if ok and type(e) == 'table' and type(e.symbol) == 'string' then
    entries[flat[i]] = e
    ids[#ids + 1] = flat[i]
    if e.state ~= 'released' and conc_key[e.symbol] == nil and not missing[e.symbol] then
      missing[e.symbol] = true
      miss[#miss + 1] = e.symbol
    end
  end
end
if #miss > 0 then return {'retry', miss} end
table.sort(ids)
local out = {}
local function note(kind, key, before, after, id)
  out[#out + 1] = cjson.encode({kind = kind, key = key, before = before, after = after,
    intent_id = id})
end
for _, id in ipairs(ids) do
  local e = entries[id]
  local score = redis.call('ZSCORE', KEYS[2], id)
  if e.state == 'pending' then
    if not score then
      redis.call('ZADD', KEYS[2], int(e.ts or now), id)
      note('INDEX_FIXED', KEYS[2], nil, int(e.ts or now), id)
    end
  elseif score then
    redis.call('ZREM', KEYS[2], id)
    note('INDEX_FIXED', KEYS[2], score, nil, id)
  end
  if e.state == 'released' and not redis.call('ZSCORE', KEYS[3], id) then
    local at = int(e.released_ts or e.ts or now)
    redis.call('ZADD', KEYS[3], at, id)
    note('INDEX_FIXED', KEYS[3], nil, at, id)
  end
end
local index = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #index, 2 do
  if entries[index[i]] == nil then
    redis.call('ZREM', KEYS[2], index[i])
    note('INDEX_FIXED', KEYS[2], index[i + 1], nil, index[i])
  end
end
local sums, counts = {FUT = 0, SPOT = 0}, {}
for _, id in ipairs(ids) do
  local e = entries[id]
  if e.state ~= 'released' then
    if sums[e.market] ~= nil then sums[e.market] = sums[e.market] + (units(e.amount) or 0) end
    counts[e.symbol] = (counts[e.symbol] or 0) + 1
  end
end
for _, m in ipairs({{'FUT', KEYS[4]}, {'SPOT', KEYS[5]}}) do
  local raw = redis.call('GET', m[2])
  if units(raw) ~= sums[m[1]] then
    local want = money(sums[m[1]])
    redis.call('SET', m[2], want)
    note('COUNTER_FIXED', m[2], raw or nil, want, nil)
  end
end
for i = 4, #ARGV do
  local key = KEYS[i + 3]
  local raw = redis.call('GET', key)
  local want = counts[ARGV[i]] or 0
  if count(raw) ~= want then
    redis.call('SET', key, int(want))
    note('COUNTER_FIXED', key, raw or nil, int(want), nil)
  end
  if want > 0 then redis.call('SADD', KEYS[6], ARGV[i]) end
end
for _, id in ipairs(ids) do
  local e = entries[id]
  if e.state == 'pending' and (tonumber(e.ts) or now) < cutoff then
    local budget = budget_key(e.market, KEYS[4], KEYS[5])
    release_entry(id, e, KEYS[1], KEYS[2], KEYS[3], budget, conc_key[e.symbol], ARGV[3], now)
    note('RELEASED_STALE', KEYS[1], 'pending', 'released', id)
  end
end
return {'ok', out}
"""

# KEYS: ledger, released. ARGV: cutoff_ms, batch. Deletes released entries released before the
# cutoff (an index member whose entry is no longer released only leaves the index).
_PRUNE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
local n = 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[1], id)
  if raw then
    local ok, e = pcall(cjson.decode, raw)
    if not (ok and type(e) == 'table' and e.state ~= 'released') then
      redis.call('HDEL', KEYS[1], id)
      n = n + 1
    end
  end
  redis.call('ZREM', KEYS[2], id)
end
return {n, #ids}
"""

# KEYS: ledger, fut budget, spot budget, symbols, concurrency(s). One consistent read.
_SNAPSHOT = """
local conc = {}
for i = 5, #KEYS do conc[#conc + 1] = redis.call('GET', KEYS[i]) end
return {redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]), redis.call('SMEMBERS', KEYS[4]),
  conc, redis.call('HGETALL', KEYS[1])}
"""
