"""Starting what `imgsearch eval` measures: the local stack and the comparison Embedders."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from imgsearch.common.resources import usable_cpu_count
from imgsearch.evaluation.config import BASELINE_ENV, RAW_ENV, EvalConfig, Say, Services
from imgsearch.evaluation.records import Report
from imgsearch.evaluation.runner import evaluate
from imgsearch.evaluation.sets import build_data

_EMBEDDER_READY = r"embedder listening on (\S+):(\d+)"


def start_embedder(name: str, env: dict[str, str], log_dir: Path, timeout_s: float) -> Any:
    """One more Embedder child process (for the raw and baseline descriptors)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from imgsearch.secure_stack import OPEN_EMBEDDER_ENV
    from imgsearch.stack import Child, ChildSpec

    child = Child(
        ChildSpec(
            name=name,
            argv=[sys.executable, "-m", "imgsearch_embedder"],
            env={
                # Loopback only, like the plain local stack: plaintext, no tokens.
                **OPEN_EMBEDDER_ENV,
                "EMBEDDER_HOST": "127.0.0.1",
                "EMBEDDER_PORT": "0",
                "EMBEDDER_METRICS_PORT": "0",
                "EMBEDDER_LOG_LEVEL": "WARNING",
                **env,
            },
            ready_line=_EMBEDDER_READY,
        ),
        log_dir,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while child.ready_match is None:
            if child.exit_code() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its last lines:\n{child.tail()}")
            child.wait_line(0.5)
        child.address = f"127.0.0.1:{child.ready_match.group(2)}"
        with grpc.insecure_channel(child.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return child
                if child.exit_code() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not serving; its last lines:\n{child.tail()}")
                time.sleep(0.5)
    except BaseException:
        child.stop(10)
        raise


def embedder_threads(config: EvalConfig) -> int:
    """Torch threads of each Embedder the evaluation starts: `config.embedder_threads`,
    or (0) the usable cores shared among them, at least 1 each.

    The Embedders run at once (the default's exact pass and Search's calls, the previous
    default's, and the unprojected one's with `dimension_curve`); each with every core
    oversubscribes the machine, and torch's threads then spend their time spinning
    (measured on 2 cores, two Embedders of 2 threads each: 0.36 s of forward pass per
    image of the default descriptor, about ten times its cost alone).
    """
    if config.embedder_threads:
        return config.embedder_threads
    embedders = 1 + int(config.baseline) + int(config.dimension_curve)
    return max(1, usable_cpu_count() // embedders)


def run_evaluation(config: EvalConfig, say: Say = print) -> Report:
    """Start the local stack and the comparison Embedders, measure, stop them all."""
    from imgsearch.stack import LocalStack, StackConfig

    data = build_data(config, say)
    config = dataclasses.replace(config, embedder_threads=embedder_threads(config))  # as reported
    threads = {"EMBEDDER_TORCH_THREADS": str(config.embedder_threads)}
    stack_dir = config.data_dir / "stack"
    shutil.rmtree(stack_dir, ignore_errors=True)
    stack = LocalStack(
        StackConfig(
            data_dir=stack_dir,
            milvus=config.milvus,  # type: ignore[arg-type]
            startup_timeout_s=600,
            extra_env={
                **threads,
                "SEARCH_CACHE_ENABLED": "false",
                "SEARCH_COLLECTION": "evaluation",
                "SEARCH_LOG_LEVEL": "WARNING",
                "EMBEDDER_LOG_LEVEL": "WARNING",
            },
        ),
        announce=lambda message: say(f"  {message}"),
    )
    extra: list[Any] = []
    say(f"starting the local stack (Milvus {config.milvus}, Redis, Embedder, Search; cache off)")
    addresses = stack.start()
    try:
        services = Services(search=addresses.search, embedder=addresses.embedder)
        if config.dimension_curve:
            env = {**RAW_ENV, **threads}
            extra.append(start_embedder("embedder-raw", env, addresses.log_dir, 600))
            services.raw_embedder = extra[-1].address
        if config.baseline:
            env = {**BASELINE_ENV, **threads}
            extra.append(start_embedder("embedder-baseline", env, addresses.log_dir, 600))
            services.baseline_embedder = extra[-1].address
        return evaluate(config, services, say, data)
    finally:
        for child in extra:
            child.stop(20)
        stack.stop()
