"""The evaluation's Embedders share the machine's cores instead of each taking all of them."""

from __future__ import annotations

import pytest

from imgsearch.evaluation import stack_control
from imgsearch.evaluation.config import EvalConfig


@pytest.mark.parametrize(
    ("cores", "baseline", "curve", "expected"),
    [(2, True, False, 1), (8, True, False, 4), (8, True, True, 2), (2, True, True, 1),
     (1, False, False, 1), (4, False, False, 4)],
)  # fmt: skip
def test_cores_are_shared_among_the_embedders_started(
    monkeypatch: pytest.MonkeyPatch, cores: int, baseline: bool, curve: bool, expected: int
) -> None:
    # The core count is the machine's; replaced so every case runs on any machine.
    monkeypatch.setattr(stack_control, "usable_cpu_count", lambda: cores)
    config = EvalConfig(baseline=baseline, dimension_curve=curve)
    assert stack_control.embedder_threads(config) == expected


def test_an_explicit_thread_count_is_kept() -> None:
    assert stack_control.embedder_threads(EvalConfig(embedder_threads=3)) == 3
