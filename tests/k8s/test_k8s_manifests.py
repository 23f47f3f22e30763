"""The kustomize overlays render, are valid Kubernetes 1.31, pass the policy scan, and are hardened.

Everything here is offline: `kubectl kustomize` renders, kubernetes-validate
checks each object against the bundled 1.31 schemas in strict mode (unknown
fields are errors), and checkov runs its Kubernetes policies over the result.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s import cert_manager
from tests.k8s.manifests import OVERLAYS, Obj, Rendered

KUBERNETES_VERSION = "1.31.0"
EXPECTED_WORKLOADS = {
    "cpu": {"embedder", "search", "web", "redis", "milvus"},
    "gpu": {"embedder", "search", "web", "redis", "milvus"},
    "external-milvus": {"embedder", "search", "web", "redis"},
    "ingress": {"embedder", "search", "web", "redis", "milvus"},
}


def _kubernetes_validate(tools: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_overlay_renders_the_expected_workloads(rendered: Rendered) -> None:
    names = {workload["metadata"]["name"] for workload in rendered.workloads()}
    assert names == EXPECTED_WORKLOADS[rendered.overlay]
    assert {
        obj["metadata"].get("namespace") for obj in rendered.objects if obj["kind"] != "Namespace"
    } == {"imgsearch"}


def test_schemas_strict(
    k8s_tools: Path, rendered_overlays: dict[str, Rendered], tmp_path: Path
) -> None:
    for overlay, rendered in rendered_overlays.items():
        # Kubernetes objects against the Kubernetes schemas; cert-manager's custom
        # resources (the cert-manager component) against a schema of their own.
        core = [obj for obj in rendered.objects if not cert_manager.is_cert_manager(obj)]
        custom = [obj for obj in rendered.objects if cert_manager.is_cert_manager(obj)]
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(core))
        done = _kubernetes_validate(k8s_tools, path)
        problems = [line for line in done.stdout.splitlines() if not line.startswith("INFO")]
        assert done.returncode == 0, f"{overlay}:\n{done.stdout}{done.stderr}"
        assert not problems, f"{overlay}:\n{done.stdout}"
        # Every object was checked against a schema (a kind without one is only a WARN).
        passed = [line for line in done.stdout.splitlines() if " passed for resource " in line]
        assert len(passed) == len(core), done.stdout
        assert not cert_manager.validate(k8s_tools, custom), overlay


def test_cert_manager_schema_rejects_a_misspelt_field(
    k8s_tools: Path, rendered_overlays: dict[str, Rendered]
) -> None:
    """Control: the cert-manager check is strict, like the Kubernetes one."""
    certificate = json.loads(json.dumps(rendered_overlays["cpu"].must("Certificate", "search")))
    certificate["spec"]["dnsName"] = certificate["spec"].pop("dnsNames")
    certificate["spec"]["usages"].append("server-auth")
    problems = cert_manager.validate(k8s_tools, [certificate])
    assert any("dnsName" in line for line in problems), problems
    assert any("server-auth" in line for line in problems), problems


def test_strict_schema_check_rejects_an_unknown_field(
    k8s_tools: Path, rendered_overlays: dict[str, Rendered], tmp_path: Path
) -> None:
    """The validator is not a rubber stamp: a misspelt field in a container fails it."""
    deployment = rendered_overlays["gpu"].must("Deployment", "embedder")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 50051}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = _kubernetes_validate(k8s_tools, path)
    assert done.returncode != 0
    assert "readinesProbe" in done.stdout


def _checkov(tools: Path, directory: Path) -> dict:
    done = subprocess.run(
        [
            str(tools / "checkov"),
            "--directory", str(directory),
            "--framework", "kubernetes",
            "--output", "json",
            # Offline: no guideline or policy downloads from the vendor's API.
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert done.stdout.strip(), f"checkov printed nothing:\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def test_checkov_kubernetes_policies_pass(k8s_tools: Path, rendered_files: dict[str, Path]) -> None:
    directory = next(iter(rendered_files.values())).parent
    report = _checkov(k8s_tools, directory)
    results = report["results"]
    failed = [
        f"{check['file_path']} {check['resource']}: {check['check_id']} {check['check_name']}"
        for check in results["failed_checks"]
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert report["summary"]["passed"] > 100, report["summary"]
    # Every skipped check carries its reason in the manifest (checkov.io/skipN: ID=reason).
    for check in results["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason) > 20, (
            f"{check['resource']}: {check['check_id']} skipped without a reason"
        )
    # Skips are few and deliberate (docs/deploy.md explains each): image digests
    # and the cpu overlay's pull policy. No secret is in an environment variable.
    assert {check["check_id"] for check in results["skipped_checks"]} == {
        "CKV_K8S_43",
        "CKV_K8S_15",
    }


def test_checkov_catches_a_privileged_container(
    k8s_tools: Path, rendered_overlays: dict[str, Rendered], tmp_path: Path
) -> None:
    """The scan does fail on a real weakness, so its pass above means something."""
    deployment = json.loads(json.dumps(rendered_overlays["gpu"].must("Deployment", "search")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True}
    (tmp_path / "weak.yaml").write_text(yaml.safe_dump(deployment))
    failed = {
        check["check_id"] for check in _checkov(k8s_tools, tmp_path)["results"]["failed_checks"]
    }
    assert {"CKV_K8S_16", "CKV_K8S_20"} <= failed, failed


def _pod_specs(rendered: Rendered) -> list[tuple[str, Obj]]:
    return [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in rendered.workloads()]


def test_pods_are_hardened(rendered: Rendered) -> None:
    for name, pod in _pod_specs(rendered):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == name, name
        writable = {
            mount["mountPath"] for c in pod["containers"] for mount in c.get("volumeMounts", [])
        }
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in ctx["capabilities"], name
            assert int(ctx["runAsUser"]) >= 10000, name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (name, bound)
        assert "/tmp" in writable or name == "redis", (
            f"{name}: read-only root needs a writable /tmp"
        )


def test_namespace_enforces_restricted_pod_security(rendered: Rendered) -> None:
    labels = rendered.must("Namespace", "imgsearch")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_gpu_scheduling_goes_with_the_gpu_request(rendered: Rendered) -> None:
    pod = rendered.must("Deployment", "embedder")["spec"]["template"]["spec"]
    gpus = pod["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
    if rendered.overlay == "cpu":
        assert gpus is None
        assert "nodeSelector" not in pod
        assert "tolerations" not in pod
    else:
        assert gpus == 1
        assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]


def test_every_deployment_has_a_disruption_budget_and_search_an_autoscaler(
    rendered: Rendered,
) -> None:
    budgets = rendered.kind("PodDisruptionBudget")
    for workload in rendered.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items())
            for pdb in budgets
        ), f"{workload['metadata']['name']} has no PodDisruptionBudget"
    hpa = rendered.must("HorizontalPodAutoscaler", "search")
    target = hpa["spec"]["scaleTargetRef"]
    assert rendered.get(target["kind"], target["name"]) is not None
    # The autoscaler owns the replica count; a re-apply must not reset it.
    assert "replicas" not in rendered.must("Deployment", "search")["spec"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def _peers_allowed_in(rendered: Rendered, app: str) -> list[tuple[Obj, list[Obj]]]:
    """(peer, ports) of every ingress rule of every policy that selects pods of `app`."""
    allowed = []
    for policy in rendered.kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if "Ingress" not in policy["spec"]["policyTypes"]:
            continue
        if selector and selector.get("app.kubernetes.io/name") != app:
            continue
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", [{}]):
                allowed.append((peer, rule.get("ports", [])))
    return allowed


def test_network_policies_deny_by_default_and_open_only_the_search_paths(
    rendered: Rendered,
) -> None:
    deny = rendered.must("NetworkPolicy", "default-deny-all")["spec"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny
    assert "egress" not in deny
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    backends = ["embedder", "redis"] + (["milvus"] if rendered.get("StatefulSet", "milvus") else [])
    for app in backends:
        peers = _peers_allowed_in(rendered, app)
        assert peers, f"nothing may reach {app}"
        for peer, ports in peers:
            if peer == monitoring:
                assert [p["port"] for p in ports] == ["metrics"], (
                    f"{app}: monitoring beyond metrics"
                )
            elif peer == {"podSelector": {"matchLabels": {"app.kubernetes.io/name": app}}}:
                assert app == "milvus", f"{app} accepts its own pods"  # standalone dials itself
            else:
                assert peer == {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "search"}}
                }, f"{app} reachable from {peer}"
    # Clients reach Search's gRPC port from anywhere.
    search_peers = _peers_allowed_in(rendered, "search")
    assert ({}, [{"port": "grpc", "protocol": "TCP"}]) in search_peers


def test_the_web_gateway_is_reached_on_https_and_reaches_only_search(rendered: Rendered) -> None:
    web_peers = _peers_allowed_in(rendered, "web")
    http = [{"port": "https", "protocol": "TCP"}]
    if rendered.get("Ingress", "web") is None:
        assert ({}, http) in web_peers  # browsers and HTTP clients, from anywhere
    else:
        controller = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
        }
        assert (controller, http) in web_peers
        assert all(peer for peer, _ in web_peers), "behind an Ingress, nothing else reaches web"
    egress = [
        rule
        for policy in rendered.kind("NetworkPolicy")
        if policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        == "web"
        for rule in policy["spec"].get("egress", [])
    ]
    assert egress == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "search"}}}],
            "ports": [{"port": 50052, "protocol": "TCP"}],
        }
    ]


def test_no_secret_is_rendered_or_passed_in_the_environment(rendered: Rendered) -> None:
    """Secrets are made outside git (scripts/k8s-secrets.sh, cert-manager) and mounted as files."""
    assert rendered.kind("Secret") == [], "no overlay may carry a secret: it would be in git"
    for workload, container in rendered.containers():
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, (workload["metadata"]["name"], source)
        for var in container.get("env", []):
            assert "secretKeyRef" not in var.get("valueFrom", {}), (
                f"{workload['metadata']['name']}: {var['name']} takes a secret from the"
                " environment; mount it as a file"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_is_applied_through_its_kustomization(overlay: str) -> None:
    """Each overlay documents its apply command where operators look for it."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text()
    assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in docs
