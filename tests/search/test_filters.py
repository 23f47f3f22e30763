"""The label filter language and the input checks, as pure functions.

These pin the grammar, the error messages and the exact Milvus expressions;
`test_search_service.py` runs the same filters against both real Milvus back
ends to pin their meaning.
"""

from __future__ import annotations

import random
import string

import pytest

from imgsearch.common.errors import InvalidArgumentError
from imgsearch_search.validation import (
    MAX_FILTER_TERMS,
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
        '(labels["category"] == "shoe"'
        ' and ((labels["color"] == "blue" or labels["color"] == "red")'
        ' and ((not (exists labels["size"])) or labels["size"] != "xl")))'
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
    assert expression == (r'(labels["k2"] == "a\\b" and labels["kind"] == "x\" or id != \"")')


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
        ("k" * 65 + " == 'x'", "is over 64 bytes"),
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
        ({"9lives": "x"}, "does not match [A-Za-z_][A-Za-z0-9_]*"),
        ({"bad-key": "x"}, "does not match"),
        ({"k" * 65: "x"}, "is over 64 bytes"),
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


# --- one rule for label keys (Insert and filters) -------------------------------------------

RESERVED_SPELLINGS = ["in", "IN", "In", "and", "AND", "aNd", "or", "OR", "not", "Not", "NOT"]
# Keys that look like the reserved words but are not them: accepted, and filterable.
LOOKALIKES = ["index", "android", "order", "note", "notes", "_in", "in_", "and_or", "Or1", "i", "n"]


@pytest.mark.parametrize("key", RESERVED_SPELLINGS)
def test_reserved_words_are_refused_as_keys_at_insert_and_in_filters(key: str) -> None:
    with pytest.raises(InvalidArgumentError) as at_insert:
        check_labels({key: "x"}, "items[0].labels")
    assert f"key {key!r} is a reserved word of the filter language" in at_insert.value.message
    assert "and, in, not, or" in at_insert.value.message  # the rule, stated
    with pytest.raises(InvalidArgumentError) as in_filter:
        parse_filter(f'{key} == "x"')
    assert f"label key {key!r} at column 1 is a reserved word" in in_filter.value.message


def test_every_key_insert_accepts_can_be_named_in_a_filter() -> None:
    rng = random.Random(9)
    alphabet = string.ascii_letters + string.digits + "_"
    generated = [
        rng.choice(string.ascii_letters + "_")
        + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 63)))
        for _ in range(300)
    ]
    for key in [*LOOKALIKES, *generated, "k" * 64, "_"]:
        check_labels({key: "v"})  # accepted at Insert...
        for text in (f'{key} == "v"', f'{key} != "w"', f'{key} in ["v", "w"]'):
            parsed = parse_filter(text)  # ...so every condition can name it
            assert parsed is not None
            assert parsed.matches({key: "v"}), text
            assert f'labels["{key}"]' in parsed.milvus_expression()


@pytest.mark.parametrize("key", ["9lives", "bad-key", "k" * 65, "ключ", "a.b", ""])
def test_keys_insert_refuses_are_refused_by_filters_too(key: str) -> None:
    with pytest.raises(InvalidArgumentError):
        check_labels({key: "x"})
    with pytest.raises(InvalidArgumentError) as info:
        parse_filter(f'{key} == "x"')
    assert info.value.message.startswith("filter")


# --- plans every back end can run -----------------------------------------------------------


def nesting(expression: str) -> int:
    """Deepest parenthesis nesting of a Milvus expression, string literals skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for char in expression:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
            continue
        if char == '"':
            in_string = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    return deepest


def values(count: int, prefix: str = "v") -> str:
    return "[" + ", ".join(f'"{prefix}{i}"' for i in range(count)) + "]"


@pytest.mark.parametrize(
    "text",
    [
        f"color in {values(256)}",
        " and ".join(f'k{i} != "x"' for i in range(32)),
        " and ".join(f"k{i} in {values(8, f'k{i}_')}" for i in range(32)),
        " and ".join([f"k{i} in {values(14)}" for i in range(16)] + ['n != "x"'] * 1),
    ],
)
def test_the_largest_filters_accepted_nest_shallowly(text: str) -> None:
    parsed = parse_filter(text)
    assert parsed is not None
    assert parsed.terms <= MAX_FILTER_TERMS
    # Milvus 2.3 refuses plans about 50 boolean operators deep; flat chains
    # reached that with 50 values. Balanced trees stay far below.
    assert nesting(parsed.milvus_expression()) <= 16


def test_the_whole_filter_is_limited_to_256_compared_values() -> None:
    two_lists = f"a in {values(128)} and b in {values(128)}"
    parsed = parse_filter(two_lists)
    assert parsed is not None
    assert parsed.terms == MAX_FILTER_TERMS
    for text, count in (
        (f"a in {values(128)} and b in {values(128)} and c == 'x'", 257),
        (f"a in {values(200)} and b in {values(57)}", 257),
        (" and ".join(f"k{i} in {values(9)}" for i in range(30)), 270),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            parse_filter(text)
        assert f"compares {count} values in all, over the limit of 256" in info.value.message
    # Repeated values count once, as they are sent once.
    repeated = "[" + ", ".join(['"1"'] * 200) + "]"
    deduplicated = parse_filter(f"a in {values(128)} and b in {repeated}")
    assert deduplicated is not None
    assert deduplicated.terms == 129
