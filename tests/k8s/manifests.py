"""Rendering the kustomize overlays and looking things up in the result.

The tests read the manifests exactly as `kubectl apply -k` would send them:
the output of `kubectl kustomize`, parsed into plain dicts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu", "external-milvus", "ingress")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError(
            "kubectl is not on PATH; the manifest tests render with `kubectl kustomize`"
        )
    return found


def render(directory: Path) -> str:
    """`kubectl kustomize DIR`, failing with kustomize's own message."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return done.stdout


@dataclass
class Rendered:
    """One overlay's objects, with the look-ups the tests need."""

    overlay: str
    text: str
    objects: list[Obj]

    @classmethod
    def of(cls, overlay: str) -> Rendered:
        text = render(K8S / "overlays" / overlay)
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
        return cls(overlay=overlay, text=text, objects=objects)

    def kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj | None:
        for obj in self.kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def must(self, kind: str, name: str) -> Obj:
        obj = self.get(kind, name)
        assert obj is not None, f"{self.overlay}: no {kind}/{name} in the rendered overlay"
        return obj

    def workloads(self) -> list[Obj]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]

    def containers(self) -> Iterator[tuple[Obj, Obj]]:
        """(workload, container) for every container of every workload."""
        for workload in self.workloads():
            pod = workload["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield workload, container

    def config_map_data(self, name: str) -> dict[str, str]:
        config_map = self.get("ConfigMap", name)
        assert config_map is not None, (
            f"{self.overlay}: envFrom names ConfigMap {name}, not rendered"
        )
        return dict(config_map.get("data", {}))

    def container_env(self, container: Obj, secret_placeholder: str = "x") -> dict[str, str]:
        """The environment the container starts with, as the kubelet builds it.

        envFrom ConfigMaps first, then `env` in order with `$(VAR)` expanded
        from what is defined so far; secret values become `secret_placeholder`.
        """
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"unexpected envFrom source {source}"
            env.update(self.config_map_data(source["configMapRef"]["name"]))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = _VAR_REF.sub(
                    lambda m: env.get(m.group(1), m.group(0)), str(var["value"])
                )
            elif "secretKeyRef" in var.get("valueFrom", {}):
                env[var["name"]] = secret_placeholder
            else:
                raise AssertionError(f"unsupported env source for {var['name']}: {var}")
        return env

    def composition_helpers(self, container: Obj) -> set[str]:
        """Variables that only exist to be expanded into another one's value."""
        referenced: set[str] = set()
        for var in container.get("env", []):
            referenced.update(_VAR_REF.findall(str(var.get("value", ""))))
        return referenced

    def services_selecting(self, labels: dict[str, str]) -> list[Obj]:
        return [
            service
            for service in self.kind("Service")
            if service["spec"].get("selector")
            and all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
        ]

    def workloads_selected_by(self, selector: dict[str, str]) -> list[Obj]:
        return [
            workload
            for workload in self.workloads()
            if all(
                workload["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in selector.items()
            )
        ]


def container_port(container: Obj, port: int | str) -> int:
    """The number of a container port given by number or by name; fails when absent."""
    ports = container.get("ports", [])
    if isinstance(port, str):
        for declared in ports:
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise AssertionError(f"container {container['name']} has no port named {port!r}")
    assert any(int(declared["containerPort"]) == port for declared in ports), (
        f"container {container['name']} does not declare port {port}"
    )
    return port


def probe_budget_s(probe: Obj) -> float:
    """Longest a probe keeps failing before the kubelet acts, in seconds."""
    return float(probe.get("initialDelaySeconds", 0)) + float(
        probe.get("periodSeconds", 10)
    ) * float(probe.get("failureThreshold", 3))
