"""The manifests are secure by default: TLS and auth on every hop, every secret a mounted file.

Secrets are never rendered (nothing secret is in git): scripts/k8s-secrets.sh
(the manual path) or cert-manager (the component) make them. These tests run
the script offline (`--print`) and check that what it makes is exactly what
the pods mount, that the certificates carry the names the services dial and
check, and that the Milvus password only ever exists in memory in its pod.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509

from imgsearch.common.auth import parse_principals
from tests.k8s.manifests import REPO, Obj, Rendered
from tests.k8s.test_k8s_consistency import _load_settings, _ours

SCRIPT = REPO / "scripts" / "k8s-secrets.sh"


def _script(directory: Path, *options: str) -> list[Obj]:
    done = subprocess.run(
        [str(SCRIPT), "--print", "--dir", str(directory), *options],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Obj]]:
    """(directory, Secrets by name) of one run of scripts/k8s-secrets.sh."""
    directory = tmp_path_factory.mktemp("made") / "secrets"
    return directory, {s["metadata"]["name"]: s for s in _script(directory)}


@pytest.fixture(scope="module")
def made_for_external_milvus(
    made: tuple[Path, dict[str, Obj]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Obj]:
    """The script's Secrets for the external-milvus overlay (your Milvus's token and CA)."""
    directory, _ = made
    token = tmp_path_factory.mktemp("milvus") / "token"
    token.write_text("imgsearch:a-password\n")
    secrets = _script(directory, "--external-milvus", str(token), str(directory / "ca.crt"))
    return {s["metadata"]["name"]: s for s in secrets}


def _mounts(rendered: Rendered) -> list[tuple[str, str, Obj, Obj]]:
    """(workload, container, volume mount, volume) of every mount of every container."""
    found = []
    for workload, container in rendered.containers():
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
        for mount in container.get("volumeMounts", []):
            if mount["name"] in volumes:  # else a volumeClaimTemplate (Milvus's data)
                found.append(
                    (workload["metadata"]["name"], container["name"], mount, volumes[mount["name"]])
                )
    return found


def _config_map_of(rendered: Rendered, workload: str, volume: str) -> dict[str, str]:
    """The data of the ConfigMap behind `volume` of `workload` (names carry a hash)."""
    obj = next(w for w in rendered.workloads() if w["metadata"]["name"] == workload)
    volumes = {v["name"]: v for v in obj["spec"]["template"]["spec"]["volumes"]}
    return rendered.config_map_data(volumes[volume]["configMap"]["name"])


def _secret_sources(rendered: Rendered, made: dict[str, Obj]) -> dict[str, set[str]]:
    """Secret name -> keys, for what the script makes and the overlay's Certificates make."""
    sources = {name: set(secret.get("data", {})) for name, secret in made.items()}
    for certificate in rendered.kind("Certificate"):
        sources[certificate["spec"]["secretName"]] = {"tls.crt", "tls.key", "ca.crt"}
    return sources


def test_tls_and_auth_are_on_for_every_hop(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, container, cls, prefix, _ in _ours(rendered):
        with monkeypatch.context() as patch:
            settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
        where = f"{rendered.overlay}/{container['name']}"
        if prefix == "WEB_":
            # No principals of its own: callers' tokens go through, to Search over TLS;
            # it serves HTTPS itself (to browsers, or to the ingress controller).
            assert settings.search_tls_ca_file is not None, where
            assert settings.tls_cert_file is not None, where
            assert settings.tls_key_file is not None, where
            continue
        assert settings.tls_mode in ("tls", "mtls"), where
        assert settings.auth_mode == "enforce", where
        assert settings.auth_file is not None, where
        if prefix == "EMBEDDER_":
            assert settings.tls_mode == "mtls", "the Embedder admits Search's certificate only"
            continue
        assert settings.embedder_tls_mode == "tls", where
        assert settings.embedder_tls_cert_file is not None, "Search's identity at the Embedder"
        assert urlsplit(settings.redis_url).scheme == "rediss", where
        assert settings.redis_password_file is not None, where
        assert urlsplit(settings.milvus_uri).scheme == "https", where
        assert settings.milvus_token_file is not None, where
        assert not settings.milvus_token.get_secret_value(), "Milvus credentials from a file"


def test_every_secret_is_a_mounted_file_that_exists(
    rendered: Rendered,
    made: tuple[Path, dict[str, Obj]],
    made_for_external_milvus: dict[str, Obj],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every *_FILE setting names a file of a mounted volume, and that key is made."""
    external = rendered.get("StatefulSet", "milvus") is None
    sources = _secret_sources(rendered, made_for_external_milvus if external else made[1])
    for workload, container_name, mount, volume in _mounts(rendered):
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            assert name in sources, f"{workload}: Secret {name} is made by nobody"
            keys = [item["key"] for item in volume["secret"].get("items", [])]
            assert set(keys) <= sources[name], (workload, name, keys)
            assert mount.get("readOnly") is True, (workload, container_name, mount)
            assert volume["secret"].get("defaultMode", 0o644) & 0o007 == 0, "not world-readable"
    for workload, container, cls, prefix, _ in _ours(rendered):
        with monkeypatch.context() as patch:
            settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
        files = {n: v for n, v in settings.model_dump().items() if n.endswith("_file") and v}
        assert files, container["name"]
        for setting, path in files.items():
            key = _key_behind(rendered, workload, container, PurePosixPath(str(path)))
            assert key is not None, f"{container['name']}: {setting}={path} is in no volume"
            kind, name, item = key
            if kind == "secret":
                assert item in sources[name], f"{setting}: Secret {name} has no key {item}"
            else:
                assert item in rendered.config_map_data(name), f"{setting}: {name} lacks {item}"


def _key_behind(
    rendered: Rendered, workload: Obj, container: Obj, path: PurePosixPath
) -> tuple[str, str, str] | None:
    """("secret" or "configMap", name, key) of the volume file at `path`, if any."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        root = PurePosixPath(mount["mountPath"])
        if path.parent != root:
            continue
        volume = volumes[mount["name"]]
        kind = "secret" if "secret" in volume else "configMap" if "configMap" in volume else None
        if kind is None:
            return None
        source = volume[kind]
        name = source["secretName"] if kind == "secret" else source["name"]
        for item in source.get("items", []):
            if item["path"] == path.name:
                return kind, name, item["key"]
        return kind, name, path.name
    return None


def test_nothing_secret_is_rendered(rendered: Rendered, made: tuple[Path, dict[str, Obj]]) -> None:
    directory, _ = made
    assert "PRIVATE KEY" not in rendered.text
    assert "imgs_" not in rendered.text
    assert "requirepass" not in rendered.text
    for name in ("search.token", "write.token", "admin.token", "redis-password"):
        assert (directory / name).read_text().strip() not in rendered.text


def test_script_makes_valid_secrets_that_fit_together(
    k8s_tools: Path, made: tuple[Path, dict[str, Obj]], rendered_overlays: dict[str, Rendered]
) -> None:
    directory, secrets = made
    path = directory.parent / "secrets.yaml"
    path.write_text(yaml.safe_dump_all(list(secrets.values())))
    done = subprocess.run(
        [str(k8s_tools / "kubernetes-validate"), "--strict", "-k", "1.31.0", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Tokens: the principals file holds their hashes, with one scope set per token.
    principals = parse_principals((directory / "search-principals.txt").read_text())
    scopes = {
        name: principals.by_token((directory / f"{name}.token").read_text().strip())
        for name in ("search", "write", "admin")
    }
    assert {name: p.scopes if p else None for name, p in scopes.items()} == {
        "search": {"search"},
        "write": {"search", "write"},
        "admin": {"admin"},
    }
    # Certificates: signed by the CA, with the names the services dial and check.
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    gpu = rendered_overlays["gpu"]
    for stem, names in _expected_names(gpu).items():
        certificate = x509.load_pem_x509_certificate((directory / f"{stem}.crt").read_bytes())
        certificate.verify_directly_issued_by(ca)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = set(san.get_values_for_type(x509.DNSName))
        have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
        assert names <= have, (stem, names - have)
    # Re-running keeps tokens and passwords (and re-issues certificates).
    before = (directory / "write.token").read_text()
    _script(directory)
    assert (directory / "write.token").read_text() == before


def _expected_names(rendered: Rendered) -> dict[str, set[str]]:
    """Certificate stem -> names it must carry, read from the manifests."""
    search = rendered.must("Deployment", "search")["spec"]["template"]["spec"]["containers"][0]
    env = rendered.container_env(search)
    embedder_host = re.sub(r"^dns:///|:\d+$", "", env["SEARCH_EMBEDDER_ADDRESS"])
    principals = _config_map_of(rendered, "embedder", "auth")["principals.txt"]
    client_names = set(re.findall(r"x509:(\S+)", principals))
    assert client_names, "the Embedder admits Search by certificate name"
    return {
        "embedder": {embedder_host},
        "search-client": client_names,
        "redis": {urlsplit(env["SEARCH_REDIS_URL"]).hostname or "", "127.0.0.1"},
        "milvus": {urlsplit(env["SEARCH_MILVUS_URI"]).hostname or ""},
        "search": {"search.imgsearch.svc.cluster.local"},
        # What the ingress controller verifies (proxy-ssl-name), and port-forwards.
        "web": {"web.imgsearch.svc", "localhost", "127.0.0.1"},
    }


def test_cert_manager_certificates_carry_the_same_names(
    rendered_overlays: dict[str, Rendered],
) -> None:
    cpu = rendered_overlays["cpu"]
    by_secret = {c["spec"]["secretName"]: c["spec"] for c in cpu.kind("Certificate")}
    for stem, names in _expected_names(cpu).items():
        spec = by_secret[f"imgsearch-{stem}-tls"]
        have = set(spec.get("dnsNames", [])) | set(spec.get("ipAddresses", []))
        assert names <= have, (stem, names - have)
        assert spec["issuerRef"]["name"] == "imgsearch-ca"
        wanted = "client auth" if stem == "search-client" else "server auth"
        assert wanted in spec["usages"], stem
    assert by_secret["imgsearch-ca"]["isCA"] is True


def test_milvus_requires_authentication_and_its_password_lives_in_memory(
    rendered: Rendered, made: tuple[Path, dict[str, Obj]], tmp_path: Path
) -> None:
    statefulset = rendered.get("StatefulSet", "milvus")
    if statefulset is None:
        # External Milvus: its security is its operator's; Search's side is checked above.
        assert rendered.overlay == "external-milvus"
        return
    pod = statefulset["spec"]["template"]["spec"]
    template = _config_map_of(rendered, "milvus", "config")["user.yaml"]
    config = yaml.safe_load(template)
    assert config["common"]["security"]["authorizationEnabled"] is True
    assert config["common"]["security"]["tlsMode"] >= 1
    assert config["common"]["security"]["defaultRootPassword"] == "__MILVUS_ROOT_PASSWORD__"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["rendered"]["emptyDir"]["medium"] == "Memory"
    init = next(c for c in pod["initContainers"] if c["name"] == "render-config")
    assert "env" not in init
    # Run the init container's script on the files the Secrets hold.
    directory, _ = made
    password = (directory / "milvus-root-password").read_text().strip()
    (tmp_path / "rendered").mkdir()
    (tmp_path / "user.yaml").write_text(template)
    script = (
        init["args"][0]
        .replace("/etc/milvus-secret/root-password", str(directory / "milvus-root-password"))
        .replace("/etc/milvus-template/user.yaml", str(tmp_path / "user.yaml"))
        .replace("/milvus/rendered/", f"{tmp_path}/rendered/")
    )
    assert password not in " ".join([*init["command"], script])
    subprocess.run([*init["command"], script], check=True, timeout=30)
    rendered_config = yaml.safe_load((tmp_path / "rendered" / "user.yaml").read_text())
    assert rendered_config["common"]["security"]["defaultRootPassword"] == password
    assert (tmp_path / "rendered" / "user.yaml").stat().st_mode & 0o077 == 0
    assert (directory / "milvus-token").read_text().strip() == f"root:{password}"


def test_redis_keeps_protected_mode_and_a_password(rendered: Rendered) -> None:
    pod = rendered.must("Deployment", "redis")["spec"]["template"]["spec"]
    config_map = next(v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v)
    conf = dict(
        line.split(None, 1)
        for line in rendered.config_map_data(config_map)["redis.conf"].splitlines()
        if line.strip() and not line.startswith(("#", "rename-command"))
    )
    assert conf["protected-mode"] == "yes"
    assert "aclfile" in conf
    assert conf["port"] == "0", "no plaintext port"
    assert "tls-port" in conf


def test_search_is_open_to_clients_but_guarded_by_tls_and_tokens(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Search port admits every source (it is meant to be called): the tokens guard it."""
    policy = rendered.must("NetworkPolicy", "search-ingress")["spec"]
    open_rules = [rule for rule in policy["ingress"] if "from" not in rule]
    assert open_rules == [{"ports": [{"port": "grpc", "protocol": "TCP"}]}]
    _, container, cls, prefix, _ = next(o for o in _ours(rendered) if o[3] == "SEARCH_")
    with monkeypatch.context() as patch:
        settings = _load_settings(patch, cls, prefix, rendered.container_env(container))
    assert settings.tls_mode == "tls"
    assert settings.auth_mode == "enforce"
    ports = {port["name"]: port for port in container["ports"]}
    service_ports = {p["name"] for p in rendered.must("Service", "search")["spec"]["ports"]}
    assert "health" not in service_ports, "the plaintext probe port is not a Service port"
    assert ports["health"]["containerPort"] == settings.health_probe_port


def test_the_ingress_talks_https_to_the_gateway_and_verifies_it(
    rendered_overlays: dict[str, Rendered], made: tuple[Path, dict[str, Obj]]
) -> None:
    """Browser -> controller -> web pod: TLS on both hops, the inner one verified by name."""
    _, secrets = made
    rendered = rendered_overlays["ingress"]
    ingress = rendered.must("Ingress", "web")
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "backend-protocol"] == "HTTPS"
    assert annotations[prefix + "proxy-ssl-verify"] == "on"
    assert annotations[prefix + "proxy-ssl-server-name"] == "on"
    # The name it checks is one the gateway's certificate carries (script and cert-manager).
    name = annotations[prefix + "proxy-ssl-name"]
    assert name in _expected_names(rendered)["web"]
    certificate = next(
        c for c in rendered_overlays["cpu"].kind("Certificate") if c["metadata"]["name"] == "web"
    )
    assert name in certificate["spec"]["dnsNames"]
    # The CA it trusts: ca.crt of a Secret in the Ingress's namespace that both
    # the script and cert-manager make, the one the web pods serve from.
    namespace, _, secret = annotations[prefix + "proxy-ssl-secret"].partition("/")
    assert namespace == ingress["metadata"]["namespace"]
    assert "ca.crt" in secrets[secret]["data"]
    assert certificate["spec"]["secretName"] == secret
    web = rendered.must("Deployment", "web")["spec"]["template"]["spec"]
    assert secret in {v["secret"]["secretName"] for v in web["volumes"] if "secret" in v}
    # The public certificate is another Secret: the private CA's is not for browsers.
    assert all(tls["secretName"] != secret for tls in ingress["spec"]["tls"])
