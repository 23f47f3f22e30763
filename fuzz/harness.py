"""Running one atheris fuzzer: libFuzzer flags with our defaults, seeds, artifacts.

`python -m fuzz.NAME [libFuzzer flags] [CORPUS_DIR ...]`. Without a corpus
directory the seeds go to `.fuzz/NAME/corpus`, which keeps what the fuzzer finds
between runs. Defaults (any can be overridden on the command line): the
per-input `-timeout` (a hang is a failure), `-rss_limit_mb` (memory beyond the
stated bound is a failure), `-max_len`, the format dictionary, and crash inputs
written to `.fuzz/NAME/artifacts/`. libFuzzer exits 0 when the run ends with
nothing found; a crash, an uncaught exception, a timeout or the memory limit
end it with a non-zero status and the input saved.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import atheris

from fuzz.seeds import write_corpus

DICTIONARY = Path(__file__).with_name("image.dict")


def run(
    name: str,
    test_one_input: Callable[[bytes], None],
    seeds: dict[str, bytes],
    *,
    rss_limit_mb: int,
    timeout_s: int,
    max_len: int,
) -> None:
    """Fuzz `test_one_input` until libFuzzer's limits end the run (never returns)."""
    arguments = sys.argv[1:]
    flags = [argument for argument in arguments if argument.startswith("-")]
    corpora = [argument for argument in arguments if not argument.startswith("-")]
    root = Path(".fuzz") / name
    if not corpora:
        corpora = [str(root / "corpus")]
    write_corpus(Path(corpora[0]), seeds)
    defaults = {
        "-rss_limit_mb": rss_limit_mb,
        "-timeout": timeout_s,
        "-max_len": max_len,
        "-dict": DICTIONARY,
        "-artifact_prefix": f"{root}/artifacts/",
    }
    for flag, value in defaults.items():
        if not any(given.startswith(f"{flag}=") for given in flags):
            flags.append(f"{flag}={value}")
    prefix = next(given for given in flags if given.startswith("-artifact_prefix="))
    Path(prefix.split("=", 1)[1]).mkdir(parents=True, exist_ok=True)
    print(f"fuzz.{name}: {len(seeds)} seeds, flags {' '.join(flags)}", flush=True)
    atheris.Setup([sys.argv[0], *flags, *corpora], test_one_input)
    atheris.Fuzz()
