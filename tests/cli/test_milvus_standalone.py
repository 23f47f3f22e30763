"""The Milvus standalone configuration `imgsearch up` writes: overrides land where Milvus reads."""

from __future__ import annotations

from pathlib import Path

import milvus
import pytest
import yaml

from imgsearch.milvus_standalone import CONFIG_OVERRIDES, override_yaml

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
    assert _lookup(changed, "queryNode.segcore.interimIndex") == _lookup(
        original, "queryNode.segcore.interimIndex"
    )
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
