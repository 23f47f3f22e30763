"""A strict schema of the cert-manager.io/v1 fields our manifests use, and its checker.

kubernetes-validate has schemas for the Kubernetes API only, not for
cert-manager's custom resources. This schema, written from cert-manager's
v1 API reference (Issuer: selfSigned, ca; Certificate: the fields below),
rejects unknown fields and bad enum values the way the API server would
with cert-manager's CRDs installed, for the subset of the API we use. It
runs with the `jsonschema` package of .venv-tools.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

GROUP = "cert-manager.io"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": {"type": "object"},
        "annotations": {"type": "object"},
    },
    "additionalProperties": False,
}
_USAGES = [
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
]  # fmt: skip
_CERTIFICATE_SPEC = {
    "type": "object",
    "required": ["secretName", "issuerRef"],
    "properties": {
        "secretName": {"type": "string"},
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": _STRINGS,
        "ipAddresses": _STRINGS,
        "uris": _STRINGS,
        "isCA": {"type": "boolean"},
        "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"},
        "renewBefore": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(h|m|s))+$"},
        "usages": {"type": "array", "items": {"enum": _USAGES}},
        "privateKey": {
            "type": "object",
            "properties": {
                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                "rotationPolicy": {"enum": ["Never", "Always"]},
                "size": {"type": "integer"},
            },
            "additionalProperties": False,
        },
        "issuerRef": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                "group": {"type": "string"},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
_ISSUER_SPEC = {
    "type": "object",
    "properties": {
        "selfSigned": {"type": "object", "additionalProperties": False},
        "ca": {
            "type": "object",
            "required": ["secretName"],
            "properties": {"secretName": {"type": "string"}},
            "additionalProperties": False,
        },
    },
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
}


def _object_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": f"{GROUP}/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


SCHEMAS = {
    "Certificate": _object_schema("Certificate", _CERTIFICATE_SPEC),
    "Issuer": _object_schema("Issuer", _ISSUER_SPEC),
}

_CHECK = """
import json, sys
import jsonschema
schemas, objects = json.load(sys.stdin)
for obj in objects:
    schema = schemas.get(obj.get("kind"))
    if schema is None:
        print(f"no schema for {obj.get('kind')} {obj['metadata']['name']}")
        continue
    for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
        path = "/".join(str(p) for p in error.absolute_path)
        print(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {error.message}")
"""


def is_cert_manager(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(f"{GROUP}/")


def validate(tools: Path, objects: list[dict[str, Any]]) -> list[str]:
    """Problems found in cert-manager objects (empty when all are valid)."""
    done = subprocess.run(
        [str(tools / "python"), "-c", _CHECK],
        input=json.dumps([SCHEMAS, objects]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()
