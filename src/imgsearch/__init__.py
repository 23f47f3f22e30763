"""imgsearch: reverse image search over gRPC.

This package holds what the services and their clients share: the generated
contracts (`imgsearch.v1`), the server runtime (`imgsearch.common`), the
Python client and the `imgsearch` CLI. Each service lives in its own package
(`imgsearch_embedder`, `imgsearch_search`).
"""

__version__ = "0.1.0"
