"""`make soak`: mixed Insert/Search/Delete against the local stack for SOAK_SECONDS (default 600).

This process is only the load: the services run as `imgsearch up` starts them
(its default store; a fresh data folder in a temporary directory), or, with
`--address`, an already running stack (the short run in `make test` attaches
to the test session's `imgsearch up`). `--concurrency` threads share one
`imgsearch.client.Client` (its retries and deadlines, as a user's program
would) and loop over a mix of operations:

- writes (40%): Insert of `--insert-batch` Fashion-MNIST images (some photo
  crops) with fresh ids while the collection holds fewer than
  `--target-items` soak items; above that, Insert or Delete (of the oldest
  items) at random, so the collection stays near its target and memory
  growth cannot be blamed on data;
- Search by image (30%; a filter on the soak's labels in a third of them),
  by the id of a live item (15%) and by a random vector (15%).

It reports calls, throughput and client-side p50/p99 latency per operation,
errors by status code, and the RSS of each service (the process and its
children) sampled every `--sample-s` seconds. The run fails (exit 1) when:

- a call or an Insert item fails with a code not declared for it
  (`DECLARED`: RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED are how an overloaded
  service answers; NOT_FOUND for a Search by an id deleted meanwhile);
- anything is lost: at the end, every item whose Insert was acknowledged and
  not deleted since is stored, and every deleted item is gone;
- memory grows: after warm-up (the first 20% of the run, at least 60 s, and
  not before the collection first held its target: data growth is not a
  leak), the least-squares trend of a service's RSS over the rest of the run,
  times that time, exceeds `RSS_SLACK` (the larger of 64 MiB and 10% of its
  RSS after warm-up). Runs shorter than 2 minutes are not judged on memory.

Prints one JSON line; a full run (not `--no-docs`) rewrites the `soak`
section of docs/benchmarks.md. All soak items are deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import machine, replace_section  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
# Photos no test queries for (tests/cli use astronaut, coffee, chelsea, rocket, camera).
PHOTOS = ("hubble_deep_field", "immunohistochemistry", "retina", "horse", "brick", "clock")
UP_READY = r'^\{"search": '

# Status codes each operation may end with on a healthy but loaded stack.
_OVERLOAD = frozenset({"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"})
DECLARED: dict[str, frozenset[str]] = {
    "Insert": _OVERLOAD,
    "Insert item": _OVERLOAD,
    "Delete": _OVERLOAD,
    "Search image": _OVERLOAD,
    "Search id": _OVERLOAD | {"NOT_FOUND"},
    "Search vector": _OVERLOAD,
    "Get": _OVERLOAD,
}
RSS_SLACK_MIB = 64.0
RSS_SLACK_FRACTION = 0.10
MIN_JUDGED_S = 120.0


def _fashion_pngs(count: int) -> list[bytes]:
    with gzip.open(FASHION_MNIST, "rb") as stream:
        raw = stream.read()
    arrays = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    out = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


class Images:
    """Query and insert images: Fashion-MNIST PNGs and random crops of photos (JPEG)."""

    def __init__(self, rng: random.Random, fashion_count: int = 10_000) -> None:
        from tests.fixtures.photos import load_photo

        self.rng = rng
        self.fashion = _fashion_pngs(fashion_count)
        self.photos = [load_photo(name, max_side=384) for name in PHOTOS]
        self.lock = threading.Lock()

    def one(self) -> bytes:
        with self.lock:
            if self.rng.random() < 0.9:
                return self.rng.choice(self.fashion)
            photo = self.rng.choice(self.photos)
            keep = self.rng.uniform(0.5, 0.95)
            width, height = photo.size
            left = self.rng.randint(0, int(width * (1 - keep)))
            top = self.rng.randint(0, int(height * (1 - keep)))
        crop = photo.crop((left, top, left + int(width * keep), top + int(height * keep)))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()


# --- the services' memory


def _service_name(cmdline: list[str], process_name: str) -> str:
    """A short name for a child of `imgsearch up`: embedder, search, redis, milvus or its own."""
    text = " ".join(cmdline)
    for marker, name in (
        ("imgsearch_embedder", "embedder"),
        ("imgsearch_search", "search"),
        ("redis-server", "redis"),
        ("milvus", "milvus"),
        ("web", "web"),
    ):
        if marker in text:
            return name
    return process_name


class Services:
    """The services of one `imgsearch up` (its child processes) and their memory over time."""

    def __init__(self, up_pid: int) -> None:
        import psutil

        self.processes: dict[str, Any] = {}
        for child in psutil.Process(up_pid).children():
            self.processes[_service_name(child.cmdline(), child.name())] = child
        self.samples: list[tuple[float, dict[str, float]]] = []

    @classmethod
    def for_address(cls, address: str) -> Services | None:
        """The services behind a local Search address (via its listening socket), if local."""
        import psutil

        port = int(address.rpartition(":")[2])
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
                parent = psutil.Process(conn.pid).parent()
                return cls(parent.pid) if parent is not None else None
        return None

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each service, its child processes included, in MiB."""
        import psutil

        sizes: dict[str, float] = {}
        for name, process in self.processes.items():
            try:
                tree = [process, *process.children(recursive=True)]
                total = 0
                for member in tree:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += member.memory_info().rss
                sizes[name] = round(total / 2**20, 1)
            except psutil.NoSuchProcess:
                sizes[name] = float("nan")
        return sizes

    def sample(self, elapsed: float) -> None:
        self.samples.append((elapsed, self.rss_mib()))


def warmup_s(seconds: float, filled_at: float | None) -> float:
    """End of the warm-up: 20% of the run, at least 60 s, and not before the collection is full."""
    return max(60.0, 0.2 * seconds, filled_at if filled_at is not None else float("inf"))


def judge_memory(
    samples: list[tuple[float, dict[str, float]]], seconds: float, filled_at: float | None = 0.0
) -> dict[str, Any]:
    """Per service: RSS at start, after warm-up and at the end, its trend, and the verdict.

    `filled_at`: seconds into the run when the collection first held its
    target (None: never; then memory is not judged, data was still growing).
    """
    warmup = warmup_s(seconds, filled_at)
    judged = seconds >= MIN_JUDGED_S and warmup < seconds
    verdicts: dict[str, Any] = {}
    for name in samples[0][1] if samples else []:
        series = [(t, sizes[name]) for t, sizes in samples if np.isfinite(sizes.get(name, np.nan))]
        after = [(t, rss) for t, rss in series if t >= warmup] if judged else []
        entry: dict[str, Any] = {
            "start_mib": series[0][1],
            "end_mib": series[-1][1],
            "max_mib": max(rss for _, rss in series),
        }
        if len(after) >= 3:
            times, values = np.array(after).T
            slope = float(np.polyfit(times, values, 1)[0])  # MiB per second
            trend = slope * (times[-1] - times[0])
            slack = max(RSS_SLACK_MIB, RSS_SLACK_FRACTION * float(values[0]))
            entry.update(
                after_warmup_mib=float(values[0]),
                trend_mib=round(trend, 1),
                slope_mib_per_min=round(slope * 60, 2),
                slack_mib=round(slack, 1),
                ok=bool(trend <= slack),
            )
        verdicts[name] = entry
    return verdicts


# --- the load


@dataclass
class Tally:
    """Calls, successful latencies (ms) and errors by code, per operation."""

    calls: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    inserted_images: int = 0
    filled_at: float | None = None  # seconds into the run when the target was first reached
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, op: str, started: float, code: str | None) -> None:
        with self.lock:
            self.calls[op] += 1
            if code is None:
                self.latencies[op].append((time.perf_counter() - started) * 1000)
            else:
                self.errors[(op, code)] += 1


def _code(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return str(getattr(code, "name", code or type(exc).__name__))


class Load:
    """The soak's items and the operations on them; every method is safe from many threads."""

    def __init__(self, client: Any, images: Images, args: argparse.Namespace, dimension: int):
        self.client = client
        self.images = images
        self.run_id = uuid.uuid4().hex[:8]
        self.target = args.target_items
        self.batch = args.insert_batch
        self.dimension = dimension
        self.tally = Tally()
        self.live: dict[str, None] = {}  # acknowledged and not deleted, oldest first
        self.deleted: set[str] = set()
        self.uncertain: set[str] = set()  # a failed call may or may not have applied
        self.lock = threading.Lock()
        self._next = 0
        self.started = time.perf_counter()

    def step(self, rng: random.Random) -> None:
        draw = rng.random()
        if draw < 0.4:
            with self.lock:
                grow = len(self.live) < self.target or rng.random() < 0.5
            self.insert() if grow else self.delete()
        elif draw < 0.7:
            self.search_image(filtered=rng.random() < 1 / 3)
        elif draw < 0.85:
            self.search_id(rng)
        else:
            self.search_vector(rng)

    def _call(self, op: str, call: Any) -> tuple[Any, str | None]:
        from imgsearch.common.errors import ImgsearchError

        started = time.perf_counter()
        try:
            result = call()
        except ImgsearchError as exc:
            self.tally.record(op, started, _code(exc))
            return None, _code(exc)
        self.tally.record(op, started, None)
        return result, None

    def insert(self) -> None:
        from imgsearch.client import ItemInput

        with self.lock:
            first, self._next = self._next, self._next + self.batch
        items = [
            ItemInput(
                image=self.images.one(),
                id=f"soak-{self.run_id}-{n}",
                labels={"soak": self.run_id, "shard": str(n % 4)},
            )
            for n in range(first, first + self.batch)
        ]
        outcomes, code = self._call("Insert", lambda: self.client.insert(items))
        with self.lock:
            if code is not None:
                self.uncertain.update(item.id for item in items)
                return
            for outcome in outcomes:
                if outcome.ok:
                    self.live[outcome.id] = None
                    self.tally.inserted_images += 1
                else:
                    self.tally.errors[("Insert item", outcome.code.name)] += 1
            if self.tally.filled_at is None and len(self.live) >= self.target:
                self.tally.filled_at = time.perf_counter() - self.started

    def delete(self) -> None:
        with self.lock:
            ids = list(self.live)[: self.batch]
            for item_id in ids:
                del self.live[item_id]
        if not ids:
            return
        _, code = self._call("Delete", lambda: self.client.delete(ids))
        with self.lock:
            (self.uncertain if code is not None else self.deleted).update(ids)

    def search_image(self, filtered: bool) -> None:
        query = f'soak == "{self.run_id}" and shard in ["0", "1"]' if filtered else ""
        image = self.images.one()
        self._call("Search image", lambda: self.client.search(image, k=10, filter=query))

    def search_id(self, rng: random.Random) -> None:
        with self.lock:
            if not self.live:
                return
            item_id = rng.choice(list(self.live))
        _, code = self._call("Search id", lambda: self.client.search(id=item_id, k=10))
        if code == "NOT_FOUND":
            with self.lock:
                if item_id in self.live:  # not deleted meanwhile: the item was lost
                    self.tally.errors[("Search id", "NOT_FOUND of a live item")] += 1

    def search_vector(self, rng: random.Random) -> None:
        vector = np.abs(np.random.default_rng(rng.getrandbits(32)).normal(size=self.dimension))
        values = (vector / np.linalg.norm(vector)).tolist()
        self._call("Search vector", lambda: self.client.search(vector=values, k=10))

    def verify_and_clean(self) -> dict[str, int]:
        """Lost (acknowledged, not deleted, missing) and resurrected (deleted, stored) items."""
        live, deleted = list(self.live), sorted(self.deleted)
        missing = self.client.get(live).missing_ids if live else []
        found = self.client.get(deleted).items if deleted else []
        leftovers = live + sorted(self.uncertain)
        if leftovers:
            self.client.delete(leftovers)
        return {
            "items_live_at_end": len(live),
            "items_deleted": len(deleted),
            "lost": len(missing),
            "resurrected": len(found),
        }


# --- the run


def _worker(load: Load, stop_at: float, seed: int) -> None:
    """One of each operation first (so even a short run covers them all), then the mix."""
    rng = random.Random(seed)
    tour = [
        load.insert,
        lambda: load.search_image(filtered=True),
        lambda: load.search_id(rng),
        lambda: load.search_vector(rng),
        load.delete,
    ]
    for operation in tour:
        if time.perf_counter() >= stop_at:
            return
        operation()
    while time.perf_counter() < stop_at:
        load.step(rng)


def _sampler(services: Services | None, started: float, stop: threading.Event, every: float):
    while services is not None:
        services.sample(time.perf_counter() - started)
        if stop.wait(every):
            services.sample(time.perf_counter() - started)
            return


def drive(address: str, services: Services | None, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load for `args.seconds` against `address`; the figures and verdicts."""
    from imgsearch.client import Client

    rng = random.Random(args.seed)
    images = Images(rng, args.images)
    with Client(address) as client:
        load = Load(client, images, args, dimension=client.stats().dimension)
        stop = threading.Event()
        started = load.started = time.perf_counter()
        sampler = threading.Thread(
            target=_sampler, args=(services, started, stop, args.sample_s), daemon=True
        )
        sampler.start()
        workers = [
            threading.Thread(target=_worker, args=(load, started + args.seconds, args.seed + n))
            for n in range(args.concurrency)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        stop.set()
        sampler.join()
        integrity = load.verify_and_clean()
    return summarise(load.tally, elapsed, integrity, services, args)


def rss_series(samples: list[tuple[float, dict[str, float]]], points: int = 24) -> dict[str, list]:
    """The RSS samples thinned to about `points` evenly spaced ones: {"t_s": [...], name: [...]}."""
    if not samples:
        return {}
    step = max(1, len(samples) // points)
    chosen = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    series: dict[str, list] = {"t_s": [round(t) for t, _ in chosen]}
    for name in chosen[0][1]:
        series[name] = [sizes.get(name) for _, sizes in chosen]
    return series


def _op_figures(tally: Tally, elapsed: float) -> dict[str, dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = {}
    for op in sorted(tally.calls):
        done = tally.latencies.get(op, [])
        ops[op] = {
            "calls": tally.calls[op],
            "ok": len(done),
            "per_s": round(len(done) / elapsed, 2),
            "p50_ms": round(float(np.percentile(done, 50)), 1) if done else None,
            "p99_ms": round(float(np.percentile(done, 99)), 1) if done else None,
        }
    return ops


def summarise(
    tally: Tally,
    elapsed: float,
    integrity: dict[str, int],
    services: Services | None,
    args: argparse.Namespace,
) -> dict[str, Any]:
    ops = _op_figures(tally, elapsed)
    errors = {f"{op}: {code}": n for (op, code), n in sorted(tally.errors.items())}
    undeclared = {
        f"{op}: {code}": n
        for (op, code), n in sorted(tally.errors.items())
        if code not in DECLARED.get(op, frozenset())
    }
    filled_at = tally.filled_at
    memory = judge_memory(services.samples, elapsed, filled_at) if services else {}
    failures = [f"undeclared error {key} ({n}x)" for key, n in undeclared.items()]
    failures += [f"{k}: {integrity[k]}" for k in ("lost", "resurrected") if integrity[k]]
    failures += [f"{name}: RSS grew" for name, m in memory.items() if m.get("ok") is False]
    failures += [f"{op}: no call succeeded" for op, f in ops.items() if not f["ok"]]
    return {
        "benchmark": "soak",
        "machine": machine(),
        "seconds": round(elapsed, 1),
        "concurrency": args.concurrency,
        "target_items": args.target_items,
        "calls_per_s": round(sum(f["ok"] for f in ops.values()) / elapsed, 2),
        "inserted_images_per_s": round(tally.inserted_images / elapsed, 2),
        "ops": ops,
        "errors": errors,
        "undeclared_errors": undeclared,
        **integrity,
        "rss": memory,
        "rss_samples": len(services.samples) if services else 0,
        "rss_series_mib": rss_series(services.samples) if services else {},
        "collection_filled_at_s": None if filled_at is None else round(filled_at, 1),
        "warmup_s": round(min(warmup_s(elapsed, filled_at), elapsed), 1),
        "memory_judged": any("ok" in entry for entry in memory.values()),
        "passed": not failures,
        "failures": failures,
    }


def start_stack(data_dir: Path) -> tuple[Any, str]:
    """`imgsearch up` with its defaults in `data_dir`; the child process and the Search address."""
    from tests.fixtures.processes import PYTHON, ChildProcess

    child = ChildProcess(
        "imgsearch up", [PYTHON, "-m", "imgsearch.cli", "up", "--data-dir", str(data_dir), "--json"]
    )
    try:
        child.wait_for_line(UP_READY, timeout=600)
    except BaseException:
        child.stop()
        raise
    ready = next(json.loads(line) for line in child.lines if line.startswith('{"search"'))
    return child, str(ready["search"])


def _load_note(result: dict[str, Any]) -> str:
    busiest = max(result["load_average_1m_start"], result["load_average_1m_end"])
    if busiest <= len(os.sched_getaffinity(0)):
        return ""
    return (
        " **Measured under load**: other work shared the cores (load average above the"
        " core count), so throughput and latency are far below this machine's own;"
        " re-run on a quiet machine for reference figures."
    )


def report(result: dict[str, Any]) -> str:
    """The Markdown section of docs/benchmarks.md."""
    ops = result["ops"]
    rows = [
        f"| {op} | {f['calls']:,} | {f['ok']:,} | {f['per_s']:.1f} | {f['p50_ms']}"
        f" | {f['p99_ms']} |"
        for op, f in ops.items()
    ]
    memory = [
        f"| {name} | {m['start_mib']:.0f} | {m.get('after_warmup_mib', float('nan')):.0f}"
        f" | {m['end_mib']:.0f} | {m['max_mib']:.0f} | {m.get('trend_mib', '-')}"
        f" | {m.get('slack_mib', '-')} | {'ok' if m.get('ok') else 'GREW' if 'ok' in m else '-'} |"
        for name, m in result["rss"].items()
    ]
    errors = ", ".join(f"{key}: {n}" for key, n in result["errors"].items()) or "none"
    return "\n".join(
        [
            "## Soak (`make soak`)",
            "",
            f"Measured {time.strftime('%Y-%m-%d')} on {result['machine']}"
            f" (1-minute load average {result['load_average_1m_start']} at the start,"
            f" {result['load_average_1m_end']} at the end): {result['seconds']:.0f} s of mixed"
            f" calls from {result['concurrency']} threads of one client process against"
            f" `imgsearch up` (its default store), the collection held near"
            f" {result['target_items']:,} soak items. Latencies are client-side, retries included."
            + _load_note(result),
            "",
            "| Operation | calls | ok | ok/s | p50 ms | p99 ms |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Throughput {result['calls_per_s']:.1f} calls/s, {result['inserted_images_per_s']:.1f}"
            f" images inserted/s. Errors by code: {errors}."
            f" Lost items: {result['lost']}; deleted items found again: {result['resurrected']}.",
            "",
            "| Service RSS (MiB) | start | after warm-up | end | max | trend | slack | |",
            "|---|---|---|---|---|---|---|---|",
            *memory,
            "",
            f"Verdict: **{'passed' if result['passed'] else 'FAILED'}**"
            + (f" ({'; '.join(result['failures'])})" if result["failures"] else "")
            + f". The collection first held its target at {result['collection_filled_at_s']} s;"
            f" warm-up ended at {result['warmup_s']} s. Trend: least-squares RSS slope after"
            " warm-up times its duration; slack: max(64 MiB, 10% of the RSS after warm-up)."
            " Reproduce with `make soak` (`SOAK_SECONDS` sets the duration).",
            "",
            "```json",
            json.dumps(result),
            "```",
        ]
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", 600)),
        help="duration of the load (default $SOAK_SECONDS or 600)",
    )
    parser.add_argument("--address", help="an already running stack's Search (default: start one)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--target-items", type=int, default=1000, help="soak items to hold")
    parser.add_argument("--insert-batch", type=int, default=4, help="images per Insert")
    parser.add_argument("--images", type=int, default=10_000, help="Fashion-MNIST images used")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    child = None
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        try:
            if args.address:
                address = args.address
                services = Services.for_address(address)
            else:
                child, address = start_stack(Path(workdir) / "stack")
                services = Services(child.proc.pid)
            result = drive(address, services, args)
        finally:
            if child is not None:
                child.stop(timeout=120)
    result.update(
        load_average_1m_start=load_start, load_average_1m_end=round(os.getloadavg()[0], 2)
    )
    if not args.no_docs:
        replace_section("soak", report(result))
    print(json.dumps(result), flush=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
