"""The cache generation of one collection: one Redis key, changed only by atomic scripts.

Every cached search result is stored under a generation *token*; a write to the
collection replaces the token, which makes every older result unreachable at
once. The key also says who may store results under the current token, until
when (by Redis' clock, so replicas' clocks do not matter). Its value is
`token|owner|until_ms|nobody_until_ms`:

- before `nobody_until_ms`, nobody may store results (a write of unknown
  outcome, or another replica's write, may still be invisible to any reader);
- before `until_ms`, only `owner` may: an instance id (the one that just wrote,
  and reads its own writes), or `~` + an instance id, meaning that instance is
  writing right now, so nobody may;
- after both, everybody may.

Both scripts run atomically in Redis, so the token and its restrictions can
never be seen apart (a crash or a failed round trip cannot leave one without
the other). Nothing depends on the key surviving: when it is missing (first
use, evicted under `maxmemory`, Redis restarted), `READ` makes a fresh random
token that no result was ever stored under and that nobody may store under for
`settle_ms`, so an evicted generation can never bring older results back, and
the eviction policy can stay `allkeys-lru`.

`MARK` writes a new token (before and after each write). A writer's mark
replaces its own "writing" mark (the write has ended); any other restriction
still in force carries over into `nobody_until_ms`, never shortened. So two
replicas writing at once never cache each other's half-visible writes, and an
unknown outcome is never cut short by a later write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

_NOW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
"""

# KEYS[1]: the generation key. ARGV[1]: a fresh token, ARGV[2]: its window (ms)
# when the key is missing (or not in this format). Returns {value, now_ms}.
READ = (
    _NOW
    + """
local value = redis.call('GET', KEYS[1])
if not value or not string.match(value, '^[^|]*|[^|]*|%d+|%d+$') then
  local window = string.format('%d', now_ms + tonumber(ARGV[2]))
  value = ARGV[1] .. '||' .. window .. '|' .. window
  redis.call('SET', KEYS[1], value)
end
return {value, now_ms}
"""
)

# KEYS[1]: the generation key. ARGV[1]: the new token, ARGV[2]: its owner ('' for
# nobody), ARGV[3]: its window (ms), ARGV[4]: the writing instance. Returns now_ms.
MARK = (
    _NOW
    + """
local owner, writer = ARGV[2], ARGV[4]
local until_ms = now_ms + tonumber(ARGV[3])
local nobody = 0
local old = redis.call('GET', KEYS[1])
if old then
  local _, old_owner, old_until, old_nobody = string.match(old, '^([^|]*)|([^|]*)|(%d+)|(%d+)$')
  if old_nobody and tonumber(old_nobody) > now_ms then nobody = tonumber(old_nobody) end
  local foreign = old_owner ~= writer and old_owner ~= '~' .. writer
  if old_until and tonumber(old_until) > now_ms and foreign then
    nobody = math.max(nobody, tonumber(old_until))
  end
end
if owner == '' then nobody = math.max(nobody, until_ms) end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. owner .. '|' .. string.format('%d', until_ms)
  .. '|' .. string.format('%d', nobody))
return now_ms
"""
)


def new_token() -> str:
    """A token no result was ever stored under (128 random bits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Generation:
    """The current generation as `READ` returned it."""

    token: str
    owner: str
    until_ms: int
    nobody_until_ms: int
    now_ms: int

    @classmethod
    def parse(cls, value: bytes | str, now_ms: int) -> Generation:
        text = value.decode() if isinstance(value, bytes) else value
        token, owner, until, nobody = text.split("|")
        return cls(token, owner, int(until), int(nobody), int(now_ms))

    def may_store(self, instance: str) -> bool:
        """Whether `instance` may store results computed now under this token."""
        if self.now_ms < self.nobody_until_ms:
            return False
        return self.now_ms >= self.until_ms or self.owner == instance
