"""The manifests agree with the code: settings, ports, probes, addresses, images.

Each of our containers' environment is loaded through the service's own
pydantic settings class, exactly as the process would at start-up, so a
misspelt variable, a wrong type or a port that the service does not listen on
fails here rather than in a CrashLoopBackOff.
"""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

import pytest
from pydantic_settings import BaseSettings

from imgsearch.v1 import embedder_pb2, search_pb2
from imgsearch_embedder.settings import EmbedderSettings
from imgsearch_search.settings import SearchSettings
from imgsearch_web.settings import WebSettings
from tests.k8s.manifests import REPO, Obj, Rendered, container_port, probe_budget_s

NAMESPACE = "imgsearch"
# image repository -> (settings class, env prefix, gRPC service of the health probes)
OUR_IMAGES: dict[str, tuple[type[BaseSettings], str, str]] = {
    "imgsearch/embedder": (
        EmbedderSettings,
        "EMBEDDER_",
        embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name,
    ),
    "imgsearch/search": (
        SearchSettings,
        "SEARCH_",
        search_pb2.DESCRIPTOR.services_by_name["Search"].full_name,
    ),
    # HTTP: its probes are /healthz and /readyz, not gRPC health.
    "imgsearch/web": (WebSettings, "WEB_", ""),
}
# Upstream images: an exact version tag (x.y.z, optionally -suffix) or a digest.
PINNED_UPSTREAM = re.compile(
    r"^[a-z0-9./-]+(:v?\d+\.\d+\.\d+[a-z0-9.-]*(@sha256:[0-9a-f]{64})?|@sha256:[0-9a-f]{64})$"
)


def _repository(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0]


def _ours(rendered: Rendered) -> list[tuple[Obj, Obj, type[BaseSettings], str, str]]:
    found = []
    for workload, container in rendered.containers():
        if _repository(container["image"]) in OUR_IMAGES:
            found.append((workload, container, *OUR_IMAGES[_repository(container["image"])]))
    assert {c["name"] for _, c, *_ in found} == {"embedder", "search", "web"}
    return found


def _load_settings(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], prefix: str, env: dict[str, str]
) -> BaseSettings:
    """The settings object the process would build from this environment."""
    import os

    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls()


def test_every_environment_variable_is_a_real_setting(rendered: Rendered) -> None:
    for _, container, cls, prefix, _ in _ours(rendered):
        fields = set(cls.model_fields)
        helpers = rendered.composition_helpers(container)
        for name in rendered.container_env(container):
            if name.startswith(prefix):
                field = name.removeprefix(prefix).lower()
                assert field in fields, (
                    f"{rendered.overlay}/{container['name']}: {name} is no field of {cls.__name__}"
                )
            else:
                # Only allowed as a building block of a real setting, e.g.
                # REDIS_PASSWORD inside SEARCH_REDIS_URL.
                assert name in helpers, (
                    f"{rendered.overlay}/{container['name']}: {name} is not a setting"
                )


def test_settings_load_from_the_manifest_environment(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, container, cls, prefix, _ in _ours(rendered):
        env = rendered.container_env(container, secret_placeholder="0123456789abcdef")
        with monkeypatch.context() as patch:
            settings = _load_settings(patch, cls, prefix, env)
        assert settings.host == "0.0.0.0", "a container must listen on all interfaces"


def test_the_settings_check_catches_a_bad_value(
    rendered_overlays: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control: a value of the wrong type or out of range does fail to load."""
    rendered = rendered_overlays["gpu"]
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "EMBEDDER_")
    env = {**rendered.container_env(container), "EMBEDDER_DTYPE": "float17"}
    with pytest.raises(ValueError, match="dtype"):
        _load_settings(monkeypatch, cls, prefix, env)


def test_ports_probes_and_services_match_the_settings(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload, container, cls, prefix, health_service in _ours(rendered):
        with monkeypatch.context() as patch:
            settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
        where = f"{rendered.overlay}/{container['name']}"
        pod = workload["spec"]["template"]["spec"]
        # Shutdown: drain, then grace for in-flight requests, must fit before SIGKILL.
        assert (
            pod["terminationGracePeriodSeconds"]
            > settings.drain_delay_s + settings.shutdown_grace_s
        ), where
        assert container_port(container, "metrics") == settings.metrics_port, where
        if prefix == "WEB_":
            _check_web_probes(container, settings, where)
            continue
        assert container_port(container, "grpc") == settings.port, where
        assert container_port(container, "metrics") == settings.metrics_port, where
        # The kubelet's gRPC probes speak neither TLS nor tokens: with TLS on they
        # must use the plaintext health-only port.
        assert settings.tls_mode != "plaintext", f"{where}: TLS is off"
        assert settings.health_probe_port is not None, where
        assert container_port(container, "health") == settings.health_probe_port, where
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if "grpc" in probe:
                assert probe["grpc"]["port"] == settings.health_probe_port, f"{where} {kind}"
                assert probe["grpc"].get("service", "") in ("", health_service), f"{where} {kind}"
            else:
                assert container_port(container, probe["tcpSocket"]["port"]) == settings.port, (
                    f"{where} {kind}"
                )
        assert container["readinessProbe"]["grpc"]["service"] == health_service, where


def _check_web_probes(container: Obj, settings: BaseSettings, where: str) -> None:
    """HTTPS probes on the gateway's port: liveness /healthz, readiness /readyz (Search SERVING)."""
    assert settings.tls_cert_file is not None, f"{where}: the gateway serves plain HTTP"
    assert container_port(container, "https") == settings.port, where
    for kind, path in (
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ):
        probe = container[kind]["httpGet"]
        assert probe["path"] == path, f"{where} {kind}"
        assert probe.get("scheme") == "HTTPS", f"{where} {kind}: the gateway answers HTTPS only"
        assert container_port(container, probe["port"]) == settings.port, f"{where} {kind}"


def test_web_reaches_search_through_its_service(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "WEB_")
    with monkeypatch.context() as patch:
        settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
    host, _, port = settings.search_address.rpartition(":")
    service = _service_for_host(rendered, host)
    assert _service_port(service, int(port))["name"] == "grpc"
    assert rendered.workloads_selected_by(service["spec"]["selector"])[0]["metadata"]["name"] == (
        "search"
    )
    ingress = rendered.get("Ingress", "web")
    if ingress is not None:
        # The Ingress lets the gateway's own limits apply: bodies up to its upload
        # limit, and a duplicate scan's stream for as long as the gateway allows it.
        annotations = ingress["metadata"]["annotations"]
        body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert int(body.removesuffix("m")) * 1024 * 1024 >= settings.max_upload_bytes
        timeout = int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        assert timeout >= settings.duplicates_timeout_s
        assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "web", "port": {"name": "https"}}
        assert ingress["spec"]["tls"], "the Ingress serves TLS"


def test_every_service_port_reaches_a_declared_container_port(rendered: Rendered) -> None:
    for service in rendered.kind("Service"):
        workloads = rendered.workloads_selected_by(service["spec"]["selector"])
        assert len(workloads) == 1, (
            f"Service {service['metadata']['name']} selects {len(workloads)} workloads"
        )
        container = workloads[0]["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            number = container_port(container, port["targetPort"])
            assert number == port["port"], f"{service['metadata']['name']}: {port} -> {number}"
    for _, container in rendered.containers():
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            if probe and ("httpGet" in probe or "tcpSocket" in probe):
                container_port(container, (probe.get("httpGet") or probe["tcpSocket"])["port"])


def _service_for_host(rendered: Rendered, host: str) -> Obj:
    match = re.fullmatch(r"([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local", host)
    assert match, f"{host} is not <service>.<namespace>.svc.cluster.local"
    assert match.group(2) == NAMESPACE, host
    return rendered.must("Service", match.group(1))


def _service_port(service: Obj, number: int) -> Obj:
    for port in service["spec"]["ports"]:
        if port["port"] == number:
            return port
    raise AssertionError(f"Service {service['metadata']['name']} has no port {number}")


def test_search_addresses_point_at_the_rendered_services(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "SEARCH_")
    with monkeypatch.context() as patch:
        settings = _load_settings(patch, cls, prefix, rendered.container_env(container))

    # The Embedder through a headless Service and the dns resolver: one address
    # per ready pod, so a round_robin channel spreads calls over all of them.
    match = re.fullmatch(r"dns:///([^:]+):(\d+)", settings.embedder_address)
    assert match, (
        f"SEARCH_EMBEDDER_ADDRESS {settings.embedder_address}: dns:/// is needed to balance calls"
    )
    service = _service_for_host(rendered, match.group(1))
    assert service["spec"].get("clusterIP") == "None", (
        "the Embedder Service for Search must be headless"
    )
    assert service["spec"].get("publishNotReadyAddresses", False) is False
    _service_port(service, int(match.group(2)))
    assert (
        rendered.workloads_selected_by(service["spec"]["selector"])[0]["metadata"]["name"]
        == "embedder"
    )

    redis = urlsplit(settings.redis_url)
    assert redis.scheme == "rediss", f"Redis is reached over TLS: {settings.redis_url}"
    assert not redis.password, "the Redis password comes from a file, not the URL"
    assert settings.redis_password_file is not None
    service = _service_for_host(rendered, redis.hostname or "")
    _service_port(service, redis.port or 6379)
    assert (
        rendered.workloads_selected_by(service["spec"]["selector"])[0]["metadata"]["name"]
        == "redis"
    )

    milvus = urlsplit(settings.milvus_uri)
    assert milvus.scheme == "https", f"Milvus is reached over TLS: {settings.milvus_uri}"
    assert settings.milvus_tls_ca_file is not None
    assert settings.milvus_token_file is not None
    assert milvus.port == 19530, settings.milvus_uri
    if rendered.get("StatefulSet", "milvus"):
        service = _service_for_host(rendered, milvus.hostname or "")
        _service_port(service, 19530)
    else:
        # external-milvus: nothing of the standalone is left; Search leaves the namespace for it.
        assert not (milvus.hostname or "").endswith(f".{NAMESPACE}.svc.cluster.local")
        assert not [
            o
            for o in rendered.objects
            if "milvus" in o["metadata"]["name"] and o["kind"] != "NetworkPolicy"
        ]
        rendered.must("NetworkPolicy", "search-to-external-milvus")


def test_images_are_built_by_make_images_or_pinned_upstream(rendered: Rendered) -> None:
    built = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for _, container in rendered.containers():
        image = container["image"]
        if _repository(image) in OUR_IMAGES:
            assert image in built, f"{rendered.overlay}: {image} is not one of {built}"
        else:
            assert PINNED_UPSTREAM.match(image), f"{image} is not pinned to a version or digest"
    embedder = rendered.must("Deployment", "embedder")["spec"]["template"]["spec"]["containers"][0]
    variant = "cpu" if rendered.overlay == "cpu" else "cuda"
    assert embedder["image"].endswith(f"-{variant}")


def test_embedder_variant_matches_device_and_startup_budget(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "EMBEDDER_")
    with monkeypatch.context() as patch:
        settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
    has_gpu = "nvidia.com/gpu" in container["resources"]["limits"]
    assert settings.device == ("cuda" if has_gpu else "cpu")
    # Model load and warm-up: ~12 s measured on 2 CPU cores; torch.compile with
    # max-autotune on a GPU takes minutes, so it needs a far longer budget.
    budget = probe_budget_s(container["startupProbe"])
    assert budget >= (600 if settings.compile else 120), budget
    if settings.device == "cpu":
        assert settings.torch_threads
        assert settings.torch_threads <= float(container["resources"]["limits"]["cpu"])


def test_search_startup_budget_covers_its_startup_timeout(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "SEARCH_")
    with monkeypatch.context() as patch:
        settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
    assert probe_budget_s(container["startupProbe"]) > settings.startup_timeout_s


_SIZE = re.compile(r"^(\d+)(mb|gb|kb)?$", re.IGNORECASE)
_UNITS = {"": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_K8S_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def test_redis_is_a_bounded_lru_cache_without_persistence(rendered: Rendered) -> None:
    deployment = rendered.must("Deployment", "redis")
    pod = deployment["spec"]["template"]["spec"]
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    conf = dict(
        line.split(None, 1)
        for line in rendered.config_map_data(config_map)["redis.conf"].splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("rename-command")
    )
    assert conf["maxmemory-policy"] == "allkeys-lru"
    assert conf["save"] == '""'
    assert conf["appendonly"] == "no"
    size = _SIZE.match(conf["maxmemory"])
    assert size, conf["maxmemory"]
    maxmemory = int(size.group(1)) * _UNITS[(size.group(2) or "").lower()]
    limit = pod["containers"][0]["resources"]["limits"]["memory"]
    limit_bytes = int(limit[:-2]) * _K8S_UNITS[limit[-2:]]
    assert 0.5 * limit_bytes <= maxmemory <= 0.8 * limit_bytes, (maxmemory, limit)
    # A password for every data command (an ACL file of password hashes), TLS only.
    assert conf["aclfile"].startswith("/etc/redis/"), conf
    assert conf["port"] == "0"
    assert conf["tls-port"] == "6379"


def test_search_balances_embedder_calls_round_robin() -> None:
    """dns:/// only spreads calls if the channel uses round_robin (gRPC defaults to pick_first)."""
    import inspect

    from imgsearch_search import embedder_client

    source = inspect.getsource(embedder_client)
    assert re.search(r"""["']grpc\.lb_policy_name["']\s*,\s*["']round_robin["']""", source) or (
        '"round_robin"' in source and "loadBalancingConfig" in source
    ), "the Search service's Embedder channel must use round_robin load balancing"
