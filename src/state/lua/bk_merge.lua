-- bk_merge.lua - merge helpers for Peek and Search (after bk_lib.lua): a
-- source is one zset of ids walked in chunks, ascending or descending,
-- after an exclusive bound; best() picks the next id over all sources.
local function src(key, after, chunk, desc) return {key = key, after = after, chunk = chunk, desc = desc, buf = {}, pos = 1} end
local function head(s)
  if s.pos > #s.buf then
    if s.done then return nil end
    if s.desc then
      s.buf = redis.call('ZREVRANGEBYLEX', s.key, s.after == '' and '+' or '(' .. s.after, '-', 'LIMIT', 0, s.chunk)
    else
      s.buf = redis.call('ZRANGEBYLEX', s.key, s.after == '' and '-' or '(' .. s.after, '+', 'LIMIT', 0, s.chunk)
    end
    s.pos = 1
    if #s.buf < s.chunk then s.done = true end
    if #s.buf == 0 then return nil end
  end
  return s.buf[s.pos]
end
local function before(a, b, desc)
  if #a ~= #b then if desc then return #a > #b else return #a < #b end end
  if desc then return a > b else return a < b end
end
local function best(srcs, desc)
  local bs, bh
  for _, s in ipairs(srcs) do
    local h = head(s)
    if h and (not bh or before(h, bh, desc)) then bs, bh = s, h end
  end
  return bs, bh
end
local function pop(s) s.after = s.buf[s.pos]; s.pos = s.pos + 1 end
