"""`imgsearch up --secure --milvus standalone`: the real Milvus 2.3 server with TLS and a password.

Milvus standalone takes a minute or more to start on 2 cores, so this runs in
`make test-secure-standalone`, not in `make test` (set
IMGSEARCH_TEST_SECURE_STANDALONE=1 to run it with pytest directly). Milvus
Lite's server (`imgsearch up --milvus lite`) has neither TLS nor
authentication (docs/security.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException

from imgsearch.client import Client, ItemInput
from tests.cli.conftest import IMGSEARCH
from tests.fixtures.photos import load_photos
from tests.fixtures.processes import ChildProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("IMGSEARCH_TEST_SECURE_STANDALONE") != "1",
        reason="minutes of Milvus start-up: run `make test-secure-standalone`",
    ),
]


def _refused(uri: str, **options: object) -> bool:
    try:
        # dedicated: pymilvus would otherwise reuse the TLS connection of an earlier client.
        MilvusClient(uri=uri, timeout=5, dedicated=True, **options).close()  # type: ignore[arg-type]
    except MilvusException:
        return True
    return False


def test_milvus_standalone_is_secured_end_to_end(tmp_path: Path) -> None:
    child = ChildProcess(
        "imgsearch up --secure --milvus standalone",
        [*IMGSEARCH, "up", "--secure", "--milvus", "standalone", "--json", "--data-dir",
         str(tmp_path)],
    )  # fmt: skip
    try:
        summary = json.loads(child.wait_for_line(r"^\{.*\"secure\"", timeout=480).string)
        secure = summary["secure"]
        ca = Path(secure["ca"])
        photos = load_photos()
        with Client(summary["search"], tls_ca=ca, token_file=secure["tokens"]["write"]) as writer:
            outcomes = writer.insert([ItemInput(image=photos["coffee"], id="coffee")])
            assert all(outcome.ok for outcome in outcomes)
            assert writer.search(photos["coffee"], k=1).hits[0].id == "coffee"
        uri = summary["milvus_uri"]
        assert uri.startswith("https://")
        token = (ca.parent / "milvus-token").read_text().strip()
        tls = {"secure": True, "server_pem_path": str(ca)}
        assert not _refused(uri, token=token, **tls)
        assert _refused(uri, token="root:Milvus", **tls), "the default password was changed"
        assert _refused(uri, **tls), "anonymous calls are refused"
        assert _refused(uri.replace("https://", "http://"), token=token), "no plaintext"
    finally:
        child.stop()
