"""Typed settings of the Search service, read once at start-up.

Every field can be set from the environment with the `SEARCH_` prefix
(e.g. `SEARCH_MILVUS_URI=http://milvus:19530`) or from the command line
(`--milvus-uri http://milvus:19530`); tests build `SearchSettings(...)` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from imgsearch.common.settings import ServerSettings


class SearchSettings(ServerSettings):
    """Configuration of one Search process."""

    model_config = SettingsConfigDict(env_prefix="SEARCH_", extra="forbid")

    # --- network (the rest in ServerSettings)
    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int | None = Field(
        9101,
        ge=0,
        le=65535,
        description="Prometheus /metrics port; 0 picks a free port; unset disables it.",
    )
    max_message_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest gRPC message accepted or sent (an Insert carries whole images).",
    )

    # --- Milvus
    milvus_uri: str = Field(
        "./.imgsearch/milvus.db",
        description=(
            "Milvus to use: a local file path runs Milvus Lite embedded (zero setup, small"
            " collections); `http://host:19530` talks to a Milvus server."
        ),
    )
    milvus_token: SecretStr = Field(
        SecretStr(""),
        description=(
            "Milvus credentials (`user:password` or an API key) as a value; prefer"
            " milvus_token_file, which keeps them out of the environment."
        ),
    )
    milvus_token_file: Path | None = Field(
        None, description="File holding the Milvus credentials (`user:password` or an API key)."
    )
    milvus_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle to verify Milvus's certificate; setting it turns TLS on.",
    )
    milvus_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate for Milvus (mutual TLS, tlsMode 2)."
    )
    milvus_tls_key_file: Path | None = Field(None, description="PEM key of milvus_tls_cert_file.")
    milvus_tls_server_name: str = Field(
        "", description="Name expected in Milvus's certificate, when it differs from the host."
    )
    milvus_db: str = Field("", description="Milvus database name; empty for the default one.")
    collection: str = Field("images", description="Name of the Milvus collection.")
    index_type: Literal["HNSW", "AUTOINDEX", "IVF_FLAT", "FLAT"] = Field(
        "HNSW", description="Index of the vector field, used when the collection is created."
    )
    metric_type: Literal["COSINE", "IP"] = Field(
        "COSINE",
        description="Similarity metric; vectors are unit norm, so both give cosine similarity.",
    )
    hnsw_m: int = Field(16, ge=4, le=64, description="HNSW graph degree M (index build).")
    hnsw_ef_construction: int = Field(
        200, ge=8, le=2048, description="HNSW efConstruction (index build quality)."
    )
    hnsw_ef: int = Field(
        128,
        ge=1,
        le=32768,
        description="HNSW ef at search time (raised to top_k when smaller): recall against speed.",
    )
    nlist: int = Field(1024, ge=1, le=65536, description="IVF_FLAT nlist (index build).")
    nprobe: int = Field(32, ge=1, le=65536, description="IVF_FLAT nprobe at search time.")
    consistency_level: Literal["Session", "Strong", "Bounded", "Eventually"] = Field(
        "Session",
        description=(
            "Milvus read consistency: Session gives read-your-writes for this process;"
            " Strong also sees other replicas' writes at about 200 ms per search."
        ),
    )
    milvus_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "Longest one Milvus call may take (within the caller's deadline); also the"
            " deadline of Get, Delete and Stats when the caller sets none."
        ),
    )
    milvus_max_pending: int = Field(
        64,
        ge=1,
        description=(
            "Milvus reads and writes that may wait for or hold one of Search's 16 Milvus"
            " threads at once; beyond it a call gets RESOURCE_EXHAUSTED at once."
        ),
    )

    # --- Embedder
    embedder_address: str = Field(
        "127.0.0.1:50051", description="host:port of the Embedder gRPC service."
    )
    embedder_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "Longest one Embed call may take when the caller set no deadline; such a"
            " request gets embedder_timeout_s + milvus_timeout_s in all. A caller's"
            " deadline, longer or shorter, governs instead."
        ),
    )
    embedder_retries: int = Field(
        2, ge=0, le=10, description="Retries of idempotent Embedder calls on UNAVAILABLE."
    )
    embedder_tls_mode: Literal["tls", "plaintext"] = Field(
        "tls", description="`tls` to the Embedder (the default) or `plaintext` (trusted network)."
    )
    embedder_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the Embedder's certificate (unset: system CAs)."
    )
    embedder_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate presented to the Embedder (mutual TLS)."
    )
    embedder_tls_key_file: Path | None = Field(
        None, description="PEM key of embedder_tls_cert_file."
    )
    embedder_tls_server_name: str = Field(
        "", description="Name expected in the Embedder's certificate when it is not the host."
    )
    embedder_token_file: Path | None = Field(
        None, description="File holding the bearer token sent to the Embedder; re-read on change."
    )

    # --- Redis cache
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis for the query and embedding caches."
    )
    redis_password_file: Path | None = Field(
        None,
        description="File holding the Redis password (not in redis_url); re-read on change.",
    )
    redis_tls_ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify Redis's certificate (with a rediss:// URL)."
    )
    redis_tls_cert_file: Path | None = Field(
        None, description="PEM client certificate for Redis (tls-auth-clients yes)."
    )
    redis_tls_key_file: Path | None = Field(None, description="PEM key of redis_tls_cert_file.")
    cache_enabled: bool = Field(True, description="Use the Redis cache at all.")
    cache_ttl_s: int = Field(
        3600, ge=1, description="Lifetime of a cached search result, in seconds."
    )
    embedding_cache_ttl_s: int = Field(
        86400, ge=1, description="Lifetime of a cached image-hash-to-embedding entry, in seconds."
    )
    redis_timeout_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Connect and command timeout of Redis calls; past it the cache is skipped.",
    )
    redis_retry_after_s: float = Field(
        1.0,
        ge=0,
        description="After a Redis failure, seconds before the cache is tried again.",
    )

    # --- request limits
    max_insert_items: int = Field(256, ge=1, description="Most items in one Insert request.")
    insert_bytes_in_flight: int = Field(
        128 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "Bytes of the Insert requests being processed at once; an Insert that would go"
            " over gets RESOURCE_EXHAUSTED (one Insert alone is always admitted)."
        ),
    )
    max_top_k: int = Field(1000, ge=1, le=16384, description="Largest top_k accepted.")
    default_top_k: int = Field(10, ge=1, description="top_k when the request leaves it at 0.")
    embed_concurrency: int = Field(
        4, ge=1, description="Embed calls one Insert may have in flight at once."
    )

    # --- query views (imgsearch.common.query_views)
    query_views: bool = Field(
        True,
        description=(
            "Image queries also ask the Embedder for views of the query (a picture pasted"
            " into it, as in a screenshot; the query straightened when it is a rotated"
            " copy; the query with outlined captions painted over) and search those too; a"
            " hit says which view found it (matched_view)."
            " Costs one more forward pass per view found. Insert never asks for views."
        ),
    )
    view_margin: float = Field(
        0.05,
        ge=0.0,
        le=2.0,
        description=(
            "How much less a view's cosine similarity counts than the whole image's: an"
            " item's score is max(whole-image score, view score - view_margin); 2 means a"
            " view never wins."
        ),
    )

    # --- thumbnails (made at Insert, stored in Milvus)
    thumbnails_enabled: bool = Field(
        True,
        description=(
            "Make and store a thumbnail of every inserted image (about 9 KiB of Milvus memory"
            " per item, docs/web.md). Off: new items are stored without one (results show no"
            " picture), for collections too large to keep them in memory."
        ),
    )
    thumbnail_max_side: int = Field(
        256, ge=32, le=512, description="Longest side of a stored thumbnail, in pixels."
    )
    thumbnail_max_bytes: int = Field(
        24 * 1024,
        ge=2048,
        le=49_000,
        description=(
            "Largest encoded thumbnail, in bytes (its base64 text must fit a Milvus VARCHAR)."
        ),
    )
    thumbnail_format: Literal["WEBP", "JPEG"] = Field(
        "WEBP", description="Encoding of new thumbnails."
    )
    thumbnail_quality: int = Field(
        80, ge=30, le=95, description="Encoder quality of thumbnails (lowered when one is too big)."
    )
    thumbnail_workers: int = Field(
        2, ge=1, le=64, description="Threads that decode images and encode thumbnails."
    )
    thumbnail_max_image_pixels: int = Field(
        40_000_000,
        ge=1024,
        description=(
            "Largest image (width x height) made into a thumbnail; keep it at least the"
            " Embedder's EMBEDDER_MAX_IMAGE_PIXELS."
        ),
    )

    # --- duplicates
    duplicates_exact_max_items: int = Field(
        50_000,
        ge=0,
        description=(
            "FindDuplicates compares every pair exactly, in memory (4 x dimension bytes per"
            " item), up to this many items; beyond, it asks Milvus for each item's neighbours."
        ),
    )
    duplicates_call_timeout_s: float = Field(
        120.0, gt=0, description="Longest one Milvus neighbour search of FindDuplicates may take."
    )
    max_concurrent_streams: int = Field(
        2,
        ge=1,
        description=(
            "FindDuplicates scans (long server streams) in progress at once; beyond it"
            " RESOURCE_EXHAUSTED. Counted apart from SEARCH_MAX_CONCURRENT_RPCS; each exact scan"
            " holds its items' vectors in memory."
        ),
    )
    duplicates_batch_size: int = Field(
        128,
        ge=1,
        le=4096,
        description=(
            "Items whose neighbours one Milvus search call looks for (nq) in FindDuplicates."
        ),
    )

    # --- lifecycle and logs
    health_check_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often Milvus and the Embedder are probed to drive the health status.",
    )
    startup_timeout_s: float = Field(
        120.0, gt=0, description="How long start-up waits for Milvus and the Embedder to answer."
    )
