"""The label filter language and the input checks, as pure functions.

These pin the grammar, the error messages and the exact Milvus expressions;
`test_search_service.py` runs the same filters against both real Milvus back
ends to pin their meaning.
"""

from __future__ import annotations

import pytest

from imgsearch.common.errors import InvalidArgumentError
from imgsearch_search.validation import (
    check_ids,
    check_labels,
    content_id,
    ids_expression,
    parse_filter,
)


def test_blank_filter_is_no_filter() -> None:
    assert parse_filter("") is None
    assert parse_filter("   \n") is None


def test_the_three_condition_kinds_translate_to_milvus() -> None:
    parsed = parse_filter('category == "shoe" and color in ["red", "blue"] and size != "xl"')
    assert parsed is not None
    assert parsed.milvus_expression() == (
        '(labels["category"] == "shoe")'
        ' and ((labels["color"] == "blue" or labels["color"] == "red"))'
        ' and (((not (exists labels["size"])) or labels["size"] != "xl"))'
    )


def test_canonical_form_ignores_order_quotes_and_duplicates() -> None:
    one = parse_filter("b in ['y', \"x\", 'x'] and a == \"1\"")
    two = parse_filter('a == "1" AND b in ["x", "y"]')
    assert one is not None
    assert two is not None
    assert one.canonical == two.canonical
    other = parse_filter('a == "2" and b in ["x", "y"]')
    assert other is not None
    assert other.canonical != one.canonical


def test_values_cannot_change_the_shape_of_the_expression() -> None:
    # A value crafted to close the string and add a disjunction stays one literal.
    parsed = parse_filter(r'kind == "x\" or id != \"" and k2 == "a\\b"')
    assert parsed is not None
    expression = parsed.milvus_expression()
    assert expression == (r'(labels["k2"] == "a\\b") and (labels["kind"] == "x\" or id != \"")')


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("kind = 'x'", "unexpected '=' at column 6"),
        ("kind == x", "expected a quoted string at column 9"),
        ("kind == 'x' or a == 'b'", "expected `and` between conditions at column 13"),
        ("kind > 'x'", "unexpected '>' at column 6"),
        ("kind in 'x'", "expected [ after in at column 9"),
        ("kind in ['x' 'y']", "expected , or ] at column 14"),
        ("kind in []", "expected a quoted string at column 10"),
        ("== 'x'", "expected a label key at column 1"),
        ("kind == 'x' and", "expected a label key at column 16, got the end of the filter"),
        ("kind == 'unterminated", 'unexpected "\'" at column 9'),
        (r"kind == 'a\qb'", r"unknown escape \q"),
        ("kind == 'a\x01'", "contains control characters"),
        ("k" * 65 + " == 'x'", "over 64 bytes"),
        ("kind in [" + ",".join(["'v'"] * 257) + "]", "over the limit of 256"),
        (" and ".join(["k == 'v'"] * 33), "more than 32 conditions"),
        ("k == '" + "x" * 5000 + "'", "over the limit of 4096"),
    ],
)
def test_bad_filters_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        parse_filter(text)
    assert info.value.message.startswith("filter")
    assert fragment in info.value.message


def test_matches_agrees_with_the_milvus_semantics() -> None:
    parsed = parse_filter('kind in ["a", "b"] and color != "red"')
    assert parsed is not None
    assert parsed.matches({"kind": "a"})  # no color: != holds
    assert parsed.matches({"kind": "b", "color": "blue"})
    assert not parsed.matches({"kind": "b", "color": "red"})
    assert not parsed.matches({"kind": "c"})
    assert not parsed.matches({})


def test_ids_are_quoted_one_by_one() -> None:
    assert ids_expression(["a", "x'] or id != ['", 'q"']) == (
        'id in ["a", "x\'] or id != [\'", "q\\""]'
    )


def test_id_and_label_checks() -> None:
    assert check_ids(["a", "b"]) == ["a", "b"]
    for bad, fragment in [
        ([], "ids is empty"),
        (["ok", ""], "ids[1] is empty"),
        (["x" * 513], "ids[0] is 513 bytes, over the limit of 512"),
        (["a\nb"], "ids[0] contains control characters"),
        (["x"] * 1001, "over the limit of 1000"),
    ]:
        with pytest.raises(InvalidArgumentError) as info:
            check_ids(bad)
        assert fragment in info.value.message
    check_labels({"color": "red", "_x9": ""})
    for labels, fragment in [
        ({"9lives": "x"}, "must match"),
        ({"bad-key": "x"}, "must match"),
        ({"k" * 65: "x"}, "must match"),
        ({"k": "v" * 257}, "257 bytes, over the limit of 256"),
        ({f"k{i}": "v" for i in range(65)}, "65 labels"),
    ]:
        with pytest.raises(InvalidArgumentError) as info:
            check_labels(labels)
        assert fragment in info.value.message


def test_content_id_is_the_sha256_hex() -> None:
    assert content_id(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
