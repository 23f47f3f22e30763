"""The Milvus standalone configuration `imgsearch up` writes: overrides land where Milvus reads."""

from __future__ import annotations

import json
from pathlib import Path

import milvus
import pytest
import yaml

from imgsearch.milvus_standalone import (
    CONFIG_OVERRIDES,
    SESSION_PREFIX,
    _free_ports,
    override_yaml,
    revoke_stale_sessions,
    stale_session_leases,
)

TEMPLATE = Path(milvus.__file__).parent / "data" / "config.yaml.template"


def _lookup(tree: dict, dotted: str) -> object:
    node: object = tree
    for key in dotted.split("."):
        assert isinstance(node, dict), dotted
        node = node[key]
    return node


def _rendered() -> str:
    """The `milvus` package's template with its placeholders filled, as it writes milvus.yaml."""
    from milvus import MilvusServerConfig

    config = MilvusServerConfig()
    text = config.template_text
    for placeholder, key in config.config_key_maps.items():
        text = text.replace(placeholder, str(config.get(key) or 0))
    return text


def test_every_override_is_set_in_the_milvus_configuration() -> None:
    original = yaml.safe_load(_rendered())
    changed = yaml.safe_load(override_yaml(_rendered(), CONFIG_OVERRIDES))
    for dotted, value in CONFIG_OVERRIDES.items():
        assert _lookup(changed, dotted) == yaml.safe_load(value), dotted
    # Nothing else moved: the sections are the same, their other keys untouched.
    assert changed.keys() == original.keys()
    interim = dict(_lookup(changed, "queryNode.segcore.interimIndex"))
    assert interim.pop("nprobe") == 64
    assert interim == {
        key: value
        for key, value in _lookup(original, "queryNode.segcore.interimIndex").items()
        if key != "nprobe"
    }
    assert _lookup(changed, "common.session.retryTimes") == _lookup(
        original, "common.session.retryTimes"
    )


def test_a_missing_leaf_is_added_to_its_section_and_nested_keys_are_found() -> None:
    text = "a:\n  # comment\n  b:\n    c: 1 # old\n  d: 2\ne: 3\n"
    changed = yaml.safe_load(override_yaml(text, {"a.b.c": "7", "a.x": "8", "e": "9"}))
    assert changed == {"a": {"b": {"c": 7}, "d": 2, "x": 8}, "e": 9}


@pytest.mark.parametrize("dotted", ["nosuchsection.key", "a.nosuch.key", "nosuchtopkey"])
def test_a_missing_section_is_an_error_not_a_new_section(dotted: str) -> None:
    with pytest.raises(KeyError, match=dotted.rsplit(".", 1)[0] if "." in dotted else dotted):
        override_yaml("a:\n  b: 1\n", {dotted: "1"})


def _session(server: int, lease: int, name: str = "querynode") -> bytes:
    return json.dumps({"ServerID": server, "ServerName": name, "LeaseID": lease}).encode()


def test_sessions_of_a_stopped_server_are_stale_once_the_running_one_registers() -> None:
    prefix = SESSION_PREFIX
    stopped = {
        prefix + "rootcoord": _session(3, 30, "rootcoord"),
        prefix + "querynode-3": _session(3, 31),
    }
    # The new server has taken id 4 (the `id` key holds the next one) but
    # registered nothing yet: nothing is known to be stale.
    assert stale_session_leases({prefix + "id": b"5", **stopped}) == {}
    # Before the new server took its id, the stopped server's sessions look current.
    assert stale_session_leases({prefix + "id": b"4", **stopped}) == {}
    running = {**stopped, prefix + "id": b"5", prefix + "indexnode-4": _session(4, 40)}
    assert stale_session_leases(running) == {
        prefix + "rootcoord": 30,
        prefix + "querynode-3": 31,
    }


@pytest.mark.parametrize("id_value", [b"", b"x", None])
def test_no_usable_server_id_means_nothing_is_revoked(id_value: bytes | None) -> None:
    sessions = {SESSION_PREFIX + "querynode-1": _session(1, 10)}
    if id_value is not None:
        sessions[SESSION_PREFIX + "id"] = id_value
    assert stale_session_leases(sessions) == {}


def test_values_that_are_not_sessions_are_ignored() -> None:
    sessions = {
        SESSION_PREFIX + "id": b"3",
        SESSION_PREFIX + "proxy-2": _session(2, 20, "proxy"),
        SESSION_PREFIX + "garbage": b"{not json",
        SESSION_PREFIX + "nolease": json.dumps({"ServerID": 1}).encode(),
        SESSION_PREFIX + "datanode-1": _session(1, 11, "datanode"),
    }
    assert stale_session_leases(sessions) == {SESSION_PREFIX + "datanode-1": 11}


def test_revoking_without_an_etcd_is_a_no_op() -> None:
    from imgsearch.stack import free_port

    assert revoke_stale_sessions(free_port(), timeout_s=0.5) == []


def test_ports_promised_to_another_listener_are_never_chosen() -> None:
    """The embedded etcd's peer port once came out equal to the proxy's port."""
    import socket

    promised: set[int] = set()
    for _ in range(20):  # ports the kernel just handed out and would hand out again
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            promised.add(int(sock.getsockname()[1]))
    chosen = _free_ports(200, promised)
    assert len(set(chosen)) == 200
    assert not promised & set(chosen)
