"""The cache generation protocol against a real Redis: writes retire results, whatever happens.

Two `QueryCache` objects on one namespace stand for two Search replicas. The
scenarios are the ways a result computed before a write could outlive it:
a write whose caller went away, a write whose outcome is unknown, a process
that dies between its marks, two replicas writing at once, a Redis that is down
during the mark, and a generation key that Redis evicts or loses.

What must hold at once (a result is retired, nobody may cache) is asserted at
once; what must hold *eventually* (caching resumes once a window has passed) is
polled with a deadline (`tests.fixtures.waiting.eventually`), never asserted
after a fixed sleep: a Redis at `maxmemory` may evict the generation again at
any moment, and a fresh generation is unsettled again, so "SETTLE_S has passed"
does not mean "this replica may cache now".
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import redis.asyncio as redis
from prometheus_client import CollectorRegistry

from imgsearch_search import cache as cache_module
from imgsearch_search.cache import CacheMetrics, QueryCache
from imgsearch_search.settings import SearchSettings
from tests.fixtures.backends import RedisServer
from tests.fixtures.processes import ChildProcess
from tests.fixtures.waiting import eventually

REDIS_SERVER = "redis-server"


def replica(redis_url: str, namespace: str, **overrides: object) -> QueryCache:
    """One Search replica's cache. A 2 s command timeout unless a test sets one: a loaded CI
    machine can stall a round trip past the production 0.25 s, and the breaker would then skip
    the cache (these tests are about generations; timeouts have their own)."""
    options: dict[str, object] = {"redis_retry_after_s": 0.2, "redis_timeout_s": 2.0}
    settings = SearchSettings(redis_url=redis_url, **{**options, **overrides})
    return QueryCache(settings, namespace, "model", CacheMetrics(CollectorRegistry()))


async def settled(cache: QueryCache) -> None:
    """Past the window of a generation first seen now (a new one is unsettled: see generations)."""
    assert await eventually(lambda: store(cache, b"warm-up", key="warm-up"))


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[tuple[QueryCache, QueryCache]]:
    namespace = uuid.uuid4().hex
    one, two = replica(redis_url, namespace), replica(redis_url, namespace)
    await settled(one)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


@pytest.fixture(autouse=True)
def short_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "SETTLE_S", 0.3)
    monkeypatch.setattr(cache_module, "UNCERTAIN_S", 0.8)


async def cached(cache: QueryCache, key: str = "q") -> bytes | None:
    return (await cache.get_result(key))[1]


async def store_token(cache: QueryCache, payload: bytes, key: str = "q") -> str | None:
    """Store a result computed now, if the cache lets this replica; the token it went under."""
    token, _ = await cache.get_result(key)
    await cache.put_result(token, key, payload)
    return token


async def store(cache: QueryCache, payload: bytes, key: str = "q") -> bool:
    """Store a result computed now, if the cache lets this replica; whether it did."""
    return await store_token(cache, payload, key) is not None


async def test_a_write_retires_results_and_only_the_writer_caches_while_it_settles(
    replicas: tuple[QueryCache, QueryCache],
) -> None:
    writer, other = replicas
    assert await store(other, b"before")
    assert await cached(writer) == b"before"

    await writer.begin_write(window_s=5)
    assert await cached(other) is None  # retired at once
    assert not await store(other, b"during")  # nobody caches while it is written
    assert not await store(writer, b"during")

    await writer.end_write(applied=True)
    assert not await store(other, b"lagging")  # the other replica's read may lag the write
    assert await store(writer, b"after")  # the writer reads its own writes
    assert await cached(other) == b"after"
    assert await eventually(lambda: store(other, b"settled"))  # once the write has settled


async def test_a_write_with_an_unknown_outcome_stops_caching_for_everyone(
    replicas: tuple[QueryCache, QueryCache],
) -> None:
    writer, other = replicas
    assert await store(other, b"before")
    await writer.begin_write(window_s=5)
    await writer.end_write(applied=False)  # Milvus timed out: it may still apply it
    assert await cached(other) is None
    assert not await store(writer, b"x")
    assert not await store(other, b"x")
    # A later, certain write by the same replica does not shorten the uncertain window.
    await writer.begin_write(window_s=0.1)
    await writer.end_write(applied=True)
    assert not await store(writer, b"x")
    assert await eventually(lambda: store(other, b"later"))  # once UNCERTAIN_S has passed


async def test_a_writer_that_dies_between_its_marks_blocks_caching_for_its_window(
    replicas: tuple[QueryCache, QueryCache],
) -> None:
    writer, other = replicas
    assert await store(other, b"before")
    await writer.begin_write(window_s=0.5)  # ...and the process is killed here
    assert await cached(other) is None
    assert not await store(other, b"mid-write")
    # Past the longest the write could take: caching resumes under the new token.
    assert await eventually(lambda: store(other, b"after"))
    assert await cached(writer) == b"after"


async def test_two_replicas_writing_at_once_cache_nothing_until_both_settle(
    replicas: tuple[QueryCache, QueryCache],
) -> None:
    one, two = replicas
    await one.begin_write(window_s=1)
    await two.begin_write(window_s=1)
    await one.end_write(applied=True)
    await two.end_write(applied=True)
    # Neither reads the other's write for sure: neither may cache.
    assert not await store(one, b"x")
    assert not await store(two, b"x")


async def test_a_mark_that_fails_while_redis_is_down_is_written_when_it_is_back(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path)
    server.start()
    namespace = uuid.uuid4().hex
    # The production timeout: the end mark must time out while Redis is stopped.
    writer = replica(server.url, namespace, redis_timeout_s=0.25)
    other = replica(server.url, namespace, redis_timeout_s=0.25)
    try:
        await settled(other)
        assert await store(other, b"before")
        await writer.begin_write(window_s=0.1)
        assert server.child is not None
        server.child.signal(19)  # SIGSTOP: the end mark times out
        await writer.end_write(applied=True)
        assert await writer.get_result("q") == (None, None)  # skips results meanwhile
        server.child.signal(18)  # SIGCONT
        assert await eventually(lambda: store(writer, b"after"))
        assert await cached(other) == b"after"  # the retried mark went through
    finally:
        await writer.close()
        await other.close()
        server.stop()


async def test_a_lost_generation_never_brings_old_results_back(
    replicas: tuple[QueryCache, QueryCache], redis_url: str
) -> None:
    """With a counter, an evicted generation restarted at 0 and met results of its first life."""
    writer, other = replicas
    tokens = []
    for round_index in range(3):
        await writer.begin_write(window_s=1)
        await writer.end_write(applied=True)
        token = await eventually(partial(store_token, other, f"round {round_index}".encode()))
        assert token is not None
        tokens.append(token)
    assert len(set(tokens)) == 3
    client = redis.Redis.from_url(redis_url)
    try:
        await client.delete(writer._generation_key)  # what eviction or a restart does
    finally:
        await client.aclose()
    for cache in (writer, other):
        token, payload = await cache.get_result("q")
        assert payload is None  # none of the three rounds' results comes back
        assert token is None  # and nobody caches until a write could have settled
    token = await eventually(lambda: store_token(other, b"new life"))
    assert token is not None
    assert token not in tokens


@pytest.fixture
def tiny_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server with 2 MiB of memory and the production eviction policy."""
    server = RedisServer(tmp_path)
    server.start()
    assert server.child is not None
    server.child.stop()
    argv = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(server.port), "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory", "2mb",
            "--maxmemory-policy", "allkeys-lru"]  # fmt: skip
    child = ChildProcess("tiny-redis", argv)
    child.wait_for_line(r"Ready to accept connections", timeout=20)
    try:
        yield server.url
    finally:
        child.stop()


async def test_results_stay_correct_while_redis_evicts_under_maxmemory(tiny_redis: str) -> None:
    """Writes and reads while unrelated keys push the generation itself out of memory.

    Redis stays at `maxmemory` throughout, so any command may evict the generation again
    (the LRU clock ticks once a second: a key made a moment ago is no safer than the filler
    written the same second). Each time, the next read starts a fresh, unsettled generation:
    caching stops again for SETTLE_S. So the checks that caching resumes poll until it does.
    """
    namespace = uuid.uuid4().hex
    writer, other = replica(tiny_redis, namespace), replica(tiny_redis, namespace)
    filler = redis.Redis.from_url(tiny_redis)

    async def fresh_result_shared() -> bool:
        return await store(other, b"fresh") and await cached(writer) == b"fresh"

    try:
        for round_index in range(3):
            await writer.begin_write(window_s=1)
            await writer.end_write(applied=True)
            assert await eventually(partial(store, writer, f"round {round_index}".encode()))
            for chunk in range(2000):  # other entries until the LRU takes the generation
                await filler.set(f"filler:{round_index}:{chunk}", b"x" * 16384)
                if not await filler.exists(writer._generation_key):
                    break
            assert not await filler.exists(writer._generation_key), "never evicted"
            for cache in (writer, other):
                token, payload = await cache.get_result("q")
                assert payload is None  # no earlier round's result
                assert token is None  # nobody caches until a write could have settled
            # Cache under the new generation too: the next one must not meet this result either.
            payload = f"after eviction {round_index}".encode()
            assert await eventually(partial(store, other, payload))
        assert (await filler.info("stats"))["evicted_keys"] > 0
        assert await eventually(fresh_result_shared)  # eviction costs hits, not caching for good
    finally:
        await filler.aclose()
        await writer.close()
        await other.close()
