"""What Redis holds for a cluster, and the Lua scripts that change it atomically.

Every key of a room shares the room's hash tag (`rt:{name}:…`). A script runs alone in Redis, so
each one is a step no other process can interleave with: binding a nickname, accepting a
message, and every write of the room's owner (which first checks the owner's fencing token).
See docs/cluster.md for the layout.
"""

from __future__ import annotations

from dataclasses import dataclass

OUT_MAXLEN = 10_000  # events kept in a room's outbound stream (readers are milliseconds behind)

# ----- the room's keys, in the order every script below takes them -----
ROOM_KEYS = ("owner", "epoch", "out", "in", "state", "text", "history", "people", "names",
             "namekeys", "conns", "count", "ids")


@dataclass(frozen=True)
class RoomKeys:
    """The keys of one room."""

    room: str

    def key(self, part: str) -> str:
        return f"rt:{{{self.room}}}:{part}"

    @property
    def all(self) -> list[str]:
        return [*(self.key(part) for part in ROOM_KEYS), ROOMS_KEY]

    @property
    def out(self) -> str:
        return self.key("out")

    @property
    def inbound(self) -> str:
        return self.key("in")


def node_key(node: str) -> str:
    """The node's liveness key (it expires when the node stops renewing it)."""
    return f"rt:node:{node}"


def node_rooms_key(node: str) -> str:
    """The rooms where the node has (or had) connections."""
    return f"rt:node:{node}:rooms"


def wake_key(node: str) -> str:
    """A stream the node's own reader also waits on, so it can be woken."""
    return f"rt:node:{node}:wake"


NODES_KEY = "rt:nodes"
ROOMS_KEY = "rt:rooms"  # the rooms with someone in them, anywhere
GENERATION_KEY = "rt:generation"  # set once per Redis lifetime: a new value means data was lost

# The KEYS of room scripts: 1 owner, 2 epoch, 3 out, 4 in, 5 state, 6 text, 7 history,
# 8 people, 9 names, 10 namekeys, 11 conns, 12 count, 13 ids, 14 the set of open rooms.
_PRELUDE = f"""
local function emit(event, data, skip, hold)
  local args = {{'XADD', KEYS[3], 'MAXLEN', '~', {OUT_MAXLEN}, '*', 'e', event, 'd', data}}
  if skip ~= nil and skip ~= '' then table.insert(args, 'x'); table.insert(args, skip) end
  if hold then table.insert(args, 'h'); table.insert(args, '1') end
  return redis.call(unpack(args))
end
local function last_id()
  local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
local function presence(uid, name)
  return '{{"user_id":' .. cjson.encode(uid) .. ',"name":' .. cjson.encode(name) .. '}}'
end
"""

# Bind a connection to a person (the rules of rooms/roster.py's Roster.bind), announce the
# person's first connection, and return the newcomer's snapshot at that very point.
# ARGV: conn, wanted user id ('' if none), fresh user id, name, name key, now ms, max people,
#       the connection's sid (skipped by its own join), the room's default reply mode, the
#       room's name
BIND = _PRELUDE + """
local conn = ARGV[1]
if redis.call('HEXISTS', KEYS[11], conn) == 1 then return {'already_registered'} end
local holder = redis.call('HGET', KEYS[9], ARGV[5])
local uid = ARGV[2]
if holder and holder ~= uid then return {'name_taken'} end
if not holder and redis.call('HLEN', KEYS[8]) >= tonumber(ARGV[7]) then return {'room_full'} end
if not holder and uid ~= '' and redis.call('HEXISTS', KEYS[8], uid) == 1 then uid = '' end
if not holder then
  if uid == '' then uid = ARGV[3] end
  local wire = '{"user_id":' .. cjson.encode(uid) .. ',"name":' .. cjson.encode(ARGV[4]) ..
               ',"since":' .. ARGV[6] .. '}'
  redis.call('HSET', KEYS[8], uid, wire)
  redis.call('HSET', KEYS[9], ARGV[5], uid)
  redis.call('HSET', KEYS[10], uid, ARGV[5])
end
redis.call('HSET', KEYS[11], conn, uid)
redis.call('SADD', KEYS[14], ARGV[10])
local first = redis.call('HINCRBY', KEYS[12], uid, 1) == 1
if first then emit('join', presence(uid, ARGV[4]), cjson.encode({ARGV[8]}), true) end
local state = redis.call('HMGET', KEYS[5], 'busy', 'answer', 'reply', 'taken')
local waiting = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], '(' .. (state[4] or '0-0'), '+')) do
  local fields = entry[2]
  if fields[1] == 'k' and fields[2] == 'msg' then table.insert(waiting, fields[4]) end
end
return {'ok', uid, first and '1' or '0', last_id(), redis.call('HVALS', KEYS[8]),
        redis.call('LRANGE', KEYS[7], 0, -1), state[1] or '', state[2] or '',
        redis.call('GET', KEYS[6]) or '', state[3] or ARGV[9], waiting}
"""

# Forget a connection; the person's last one leaves; the room's last person empties the room:
# its state goes, its owner is fenced out, and the thread id is returned for deletion.
# ARGV: conn, the room's name
UNBIND = _PRELUDE + """
local uid = redis.call('HGET', KEYS[11], ARGV[1])
if not uid then return {'gone'} end
redis.call('HDEL', KEYS[11], ARGV[1])
if redis.call('HINCRBY', KEYS[12], uid, -1) <= 0 then
  redis.call('HDEL', KEYS[12], uid)
  local person = cjson.decode(redis.call('HGET', KEYS[8], uid))
  redis.call('HDEL', KEYS[9], redis.call('HGET', KEYS[10], uid))
  redis.call('HDEL', KEYS[8], uid)
  redis.call('HDEL', KEYS[10], uid)
  emit('leave', presence(uid, person['name']), '', true)
  if redis.call('HLEN', KEYS[8]) == 0 then
    local thread = redis.call('HGET', KEYS[5], 'thread') or ''
    redis.call('DEL', KEYS[1], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[11], KEYS[12], KEYS[13])
    redis.call('SREM', KEYS[14], ARGV[2])
    emit('~empty', '', '', false)
    return {'empty', thread}
  end
  return {'left'}
end
return {'stays'}
"""

# Accept a user's message: decide whether it wants an answer (rooms/reply.py's wants_run),
# refuse when too many turns wait, queue it for the owner and show it to the room.
# ARGV: message json, mentioned '1'/'0', default reply mode, max queued turns, skip json,
#       quiet json (the asker's sids that get no final message-list)
ACCEPT = _PRELUDE + """
local mode = redis.call('HGET', KEYS[5], 'reply') or ARGV[3]
local mentioned = mode ~= 'always' and ARGV[2] == '1'
local kind = 'turn'
if mode == 'mention' and not mentioned then kind = 'note' end
local queued = tonumber(redis.call('HGET', KEYS[5], 'queued') or '0')
if kind == 'turn' then
  if queued >= tonumber(ARGV[4]) then return {'busy_queue_full'} end
  queued = redis.call('HINCRBY', KEYS[5], 'queued', 1)
end
redis.call('XADD', KEYS[4], '*', 'k', 'msg', 'd', ARGV[1], 't', kind,
           'm', mentioned and '1' or '0', 'p', (mode == 'auto' and not mentioned) and '1' or '0',
           'q', ARGV[6])
emit('message', ARGV[1], ARGV[5], false)
return {'ok', tostring(queued)}
"""

# Claim a message id for the room; 0 if it was used already. ARGV: id
CLAIM = "return redis.call('SADD', KEYS[13], ARGV[1])"

# A stop from any process, for the owner; whether an answer is running. ARGV: who
STOP = """
redis.call('XADD', KEYS[4], '*', 'k', 'stop', 'by', ARGV[1])
return redis.call('HEXISTS', KEYS[5], 'running')
"""

# Switch the reply mode; 0 if it was that already. ARGV: mode, default mode, settings json,
# notice json
SET_REPLY = _PRELUDE + """
if (redis.call('HGET', KEYS[5], 'reply') or ARGV[2]) == ARGV[1] then return 0 end
redis.call('HSET', KEYS[5], 'reply', ARGV[1])
emit('room-settings', ARGV[3], '', false)
emit('message', ARGV[4], '', false)
return 1
"""

# The owner's lease. ARGV: node, lease ms, the Redis generation the node knows. Returns the
# fencing token, or nil if owned (or if Redis lost its data and the node has not noticed yet:
# the room's last owner writes it back first).
ACQUIRE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
if redis.call('GET', '{GENERATION_KEY}') ~= ARGV[3] then return false end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token
"""

# ARGV: token, lease ms. 1 if still the owner (and renewed).
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# ARGV: token
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

# Every write of the room's owner, in order, if its token still holds the lease (else -1).
# ARGV: token, the batch's number (a batch retried after a lost reply is applied once), then
# operations:
#   E event data skip hold   an event to the room (and what a newcomer's snapshot needs of it)
#   D text data              a message-delta carrying `text`
#   H message                a message entered the thread (the history)
#   T inbound-id turn        the owner took a queued item ('1' for a turn that wants an answer)
#   F message-id             the item of that message is done (told to /stream listeners)
#   R thread                 the thread's id
#   C                        the history was cleared
#   P mode                   the reply mode (seeding a Redis that lost its data)
#   Q message kind mentioned may-pass quiet
#                            a queued message (seeding a Redis that lost its data)
WRITE = _PRELUDE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local mark = ARGV[1] .. '#'
local seen = redis.call('HGET', KEYS[5], 'batch') or ''
if seen:sub(1, #mark) == mark and tonumber(seen:sub(#mark + 1)) >= tonumber(ARGV[2]) then
  return 1
end
redis.call('HSET', KEYS[5], 'batch', mark .. ARGV[2])
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'E' then
    local event = ARGV[i + 1]
    emit(event, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4] == '1')
    if event == 'ai-start' then
      redis.call('HSET', KEYS[5], 'busy', '1')
    elseif event == 'message-start' then
      redis.call('HSET', KEYS[5], 'answer', ARGV[i + 2])
      redis.call('DEL', KEYS[6])
    elseif event == 'message-list' then
      redis.call('HDEL', KEYS[5], 'answer')
      redis.call('DEL', KEYS[6])
    elseif event == 'ai-end' then
      redis.call('HDEL', KEYS[5], 'busy', 'answer')
      redis.call('DEL', KEYS[6])
    end
    i = i + 5
  elseif op == 'D' then
    emit('message-delta', ARGV[i + 2], '', false)
    redis.call('APPEND', KEYS[6], ARGV[i + 1])
    i = i + 3
  elseif op == 'H' then
    redis.call('RPUSH', KEYS[7], ARGV[i + 1])
    i = i + 2
  elseif op == 'T' then
    redis.call('HSET', KEYS[5], 'taken', ARGV[i + 1])
    if ARGV[i + 2] == '1' then
      if tonumber(redis.call('HGET', KEYS[5], 'queued') or '0') > 0 then
        redis.call('HINCRBY', KEYS[5], 'queued', -1)
      end
      redis.call('HSET', KEYS[5], 'running', '1')
    end
    redis.call('XTRIM', KEYS[4], 'MINID', ARGV[i + 1])
    i = i + 3
  elseif op == 'F' then
    redis.call('HDEL', KEYS[5], 'running')
    if ARGV[i + 1] ~= '' then emit('~done', cjson.encode({id = ARGV[i + 1]}), '', false) end
    i = i + 2
  elseif op == 'R' then
    redis.call('HSET', KEYS[5], 'thread', ARGV[i + 1])
    i = i + 2
  elseif op == 'C' then
    redis.call('DEL', KEYS[7])
    i = i + 1
  elseif op == 'P' then
    redis.call('HSET', KEYS[5], 'reply', ARGV[i + 1])
    i = i + 2
  elseif op == 'Q' then
    redis.call('XADD', KEYS[4], '*', 'k', 'msg', 'd', ARGV[i + 1], 't', ARGV[i + 2],
               'm', ARGV[i + 3], 'p', ARGV[i + 4], 'q', ARGV[i + 5])
    if ARGV[i + 2] == 'turn' then redis.call('HINCRBY', KEYS[5], 'queued', 1) end
    i = i + 6
  else
    return redis.error_reply('unknown operation ' .. op)
  end
end
return 1
"""

# What a new owner reads before it takes over: the state, the history, the people, the queued
# messages (after the last one taken) and the inbound stream's end. ARGV: none
TAKEOVER_STATE = """
local state = redis.call('HMGET', KEYS[5], 'thread', 'reply', 'taken', 'busy', 'answer',
                         'running')
-- A turn taken but never shown (an `auto` turn still deciding) is taken again.
local from = '(' .. (state[3] or '0-0')
if state[6] and not state[4] and state[3] then from = state[3] end
local queued = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[4], from, '+')) do
  local f = {}
  local fields = entry[2]
  for j = 1, #fields, 2 do f[fields[j]] = fields[j + 1] end
  if f['k'] == 'msg' then
    table.insert(queued, {entry[1], f['d'], f['t'], f['m'], f['p'], f['q']})
  end
end
local inpos = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
return {state[1] or '', state[2] or '', state[4] or '', state[5] or '',
        redis.call('GET', KEYS[6]) or '', redis.call('LRANGE', KEYS[7], 0, -1),
        redis.call('HVALS', KEYS[8]), queued, #inpos > 0 and inpos[1][1] or '0-0'}
"""
