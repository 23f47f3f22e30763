"""Request validation and the label filter language, checked once at the boundary.

Everything that reaches Milvus as text goes through here: ids, label values and
filters are quoted with `milvus_literal`, never pasted in, so a client cannot
change the meaning of an expression (pymilvus' own `get`/`delete` by id paste
ids between single quotes unescaped, which is why the store does not use them).

The filter language is deliberately small (see `SearchRequest.filter`):

    condition  := key "==" string | key "!=" string | key "in" "[" string ("," string)* "]"
    filter     := condition ("and" condition)*

It is parsed into `LabelFilter`, whose `canonical` form (conditions sorted,
`in` lists sorted and de-duplicated) keys the query cache, and whose
`milvus_expression` runs the same semantics on Milvus standalone and Milvus
Lite: `key != "v"` also matches items that have no label `key`.

Label keys follow one rule everywhere (`label_key_problem`): what Insert
accepts, a filter can name. The words of the language (`RESERVED_WORDS`, in
any case) are refused as keys at Insert and in filters alike.

Every filter the parser accepts runs on every back end. Milvus 2.3 decodes a
plan with protobuf's default recursion limit (100 levels, two per boolean
operator), so a left-deep chain of 50 `or`s, or of 48 `and`ed `!=`
conditions, is refused there; the expression is therefore emitted as
balanced trees: nesting grows with log2 of the number of terms, at most 14
levels for any filter accepted (e.g. 31 `!=` conditions and a 225-value list:
13), against the ~50 that Milvus 2.3 refuses. The whole filter may hold at most
`MAX_FILTER_TERMS` compared values: Milvus Lite evaluates each one as a pass
over the collection, so this bounds a query's work.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imgsearch.common.errors import InvalidArgumentError
from imgsearch.common.text import BLANK_ID_RULE, has_visible_text

MAX_ID_BYTES = 512
MAX_URI_BYTES = 2048
MAX_LABEL_KEY_BYTES = 64
MAX_LABEL_VALUE_BYTES = 256
MAX_LABELS_PER_ITEM = 64
MAX_IDS_PER_REQUEST = 1000
MAX_FILTER_CHARS = 4096
MAX_FILTER_CONDITIONS = 32
MAX_IN_VALUES = 256
# Compared values in the whole filter (each `==`/`!=` one, each `in` its distinct values).
MAX_FILTER_TERMS = 256
# The words of the filter language, now and reserved for it: never label keys.
RESERVED_WORDS = frozenset({"and", "in", "not", "or"})

LABEL_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# C0 controls and DEL: refused in ids and label values so every stored string
# round-trips through a Milvus string literal unchanged on every back end.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def milvus_literal(value: str) -> str:
    """Quote `value` as a Milvus expression string literal (double quotes, escaped)."""
    return json.dumps(value, ensure_ascii=False)


def content_id(image: bytes) -> str:
    """Default item id: the lowercase hex SHA-256 of the image bytes."""
    return hashlib.sha256(image).hexdigest()


def _check_text(value: str, what: str, max_bytes: int, allow_empty: bool) -> None:
    if not value and not allow_empty:
        raise InvalidArgumentError(f"{what} is empty")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise InvalidArgumentError(f"{what} is {size} bytes, over the limit of {max_bytes}")
    if _CONTROL_RE.search(value):
        raise InvalidArgumentError(f"{what} contains control characters")


def check_id(item_id: str, what: str = "id") -> None:
    """Raise InvalidArgumentError unless `item_id` is a valid stored-item id."""
    _check_text(item_id, what, MAX_ID_BYTES, allow_empty=False)
    if not has_visible_text(item_id):
        raise InvalidArgumentError(f"{what} is blank: {BLANK_ID_RULE}")


def check_ids(ids: Sequence[str], field: str = "ids") -> list[str]:
    """Validate a GetRequest/DeleteRequest id list; returns it as a list."""
    if not ids:
        raise InvalidArgumentError(f"{field} is empty: give at least one id")
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise InvalidArgumentError(
            f"{field} has {len(ids)} ids, over the limit of {MAX_IDS_PER_REQUEST}"
        )
    for index, item_id in enumerate(ids):
        check_id(item_id, f"{field}[{index}]")
    return list(ids)


def check_uri(uri: str, what: str = "uri") -> None:
    _check_text(uri, what, MAX_URI_BYTES, allow_empty=True)


LABEL_KEY_RULE = (
    f"a label key matches [A-Za-z_][A-Za-z0-9_]*, is at most {MAX_LABEL_KEY_BYTES} bytes"
    f" and is not a word of the filter language ({', '.join(sorted(RESERVED_WORDS))},"
    " in any case)"
)


def label_key_problem(key: str) -> str | None:
    """Why `key` cannot be a label key (None when it can): one rule for Insert and filters."""
    if not LABEL_KEY_RE.match(key):
        return "does not match [A-Za-z_][A-Za-z0-9_]*"
    if len(key.encode()) > MAX_LABEL_KEY_BYTES:
        return f"is over {MAX_LABEL_KEY_BYTES} bytes"
    if key.lower() in RESERVED_WORDS:
        return "is a reserved word of the filter language"
    return None


def check_labels(labels: Mapping[str, str], what: str = "labels") -> None:
    """Raise InvalidArgumentError unless every key and value follows Item.labels' rules."""
    if len(labels) > MAX_LABELS_PER_ITEM:
        raise InvalidArgumentError(
            f"{what} has {len(labels)} labels, over the limit of {MAX_LABELS_PER_ITEM}"
        )
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem is not None:
            raise InvalidArgumentError(f"{what}: key {key[:80]!r} {problem} ({LABEL_KEY_RULE})")
        _check_text(value, f"{what}[{key!r}]", MAX_LABEL_VALUE_BYTES, allow_empty=True)


def ids_expression(ids: Sequence[str], field: str = "id") -> str:
    """Milvus expression selecting the given primary keys, each one quoted safely."""
    return f"{field} in [{', '.join(milvus_literal(item_id) for item_id in ids)}]"


# --- the filter language --------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<op>==|!=)
  | (?P<punct>[\[\],])
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class _Token:
    kind: str  # op, punct, string, word, end
    text: str
    column: int  # 1-based, for error messages
    value: str = ""  # the unescaped content of a string token


def _unescape(body: str, column: int) -> str:
    out: list[str] = []
    chars = iter(body)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _ESCAPES:
            raise InvalidArgumentError(
                f"filter: unknown escape \\{escaped} in the string at column {column}"
                " (allowed: \\\\ \\\" \\' \\n \\t)"
            )
        out.append(_ESCAPES[escaped])
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise InvalidArgumentError(
                f"filter: unexpected {text[position]!r} at column {position + 1}"
                f" (expected a label key, ==, !=, in, a quoted string, [, ] or ,)"
            )
        kind = match.lastgroup or ""
        column = position + 1
        position = match.end()
        if kind == "space":
            continue
        raw = match.group()
        value = _unescape(raw[1:-1], column) if kind == "string" else ""
        tokens.append(_Token(kind, raw, column, value))
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


@dataclass(frozen=True)
class Condition:
    """One condition on a label: `key op values` (one value unless op is `in`)."""

    key: str
    op: str  # "==", "!=" or "in"
    values: tuple[str, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an item with these labels satisfies the condition (as Milvus would say)."""
        value = labels.get(self.key)
        if self.op == "==":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        return value in self.values

    def milvus_expression(self, field: str) -> str:
        path = f"{field}[{milvus_literal(self.key)}]"
        if self.op == "==":
            return f"{path} == {milvus_literal(self.values[0])}"
        if self.op == "!=":
            # Milvus Lite treats a missing JSON key as null (the comparison is
            # false); Milvus standalone treats it as "not equal". Spell it out.
            return f"((not (exists {path})) or {path} != {milvus_literal(self.values[0])})"
        # JSON-path `in` lists are not supported by Milvus Lite: use `or`, balanced.
        return balanced([f"{path} == {milvus_literal(v)}" for v in self.values], "or")


@dataclass(frozen=True)
class LabelFilter:
    """A parsed filter: all `conditions` must hold."""

    conditions: tuple[Condition, ...]

    @property
    def canonical(self) -> str:
        """A stable text form: equal filters (up to order and quoting) give equal strings."""
        return json.dumps([[c.key, c.op, list(c.values)] for c in self.conditions])

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(condition.matches(labels) for condition in self.conditions)

    @property
    def terms(self) -> int:
        """Compared values in the whole filter (what MAX_FILTER_TERMS bounds)."""
        return sum(len(c.values) for c in self.conditions)

    def milvus_expression(self, field: str = "labels") -> str:
        return balanced([c.milvus_expression(field) for c in self.conditions], "and")


def balanced(operands: Sequence[str], operator: str) -> str:
    """`operands` joined by `operator` as a balanced tree: nesting depth log2(n), not n.

    Milvus 2.3 refuses plans nested more than about 50 boolean operators deep
    (protobuf's recursion limit), which a flat chain of 50 `or`s reaches.
    """
    if len(operands) == 1:
        return operands[0]
    middle = len(operands) // 2
    left = balanced(operands[:middle], operator)
    right = balanced(operands[middle:], operator)
    return f"({left} {operator} {right})"


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _take(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    @staticmethod
    def _describe(token: _Token) -> str:
        return "the end of the filter" if token.kind == "end" else repr(token.text)

    def _expect_string(self) -> str:
        token = self._take()
        if token.kind != "string":
            raise InvalidArgumentError(
                f"filter: expected a quoted string at column {token.column},"
                f" got {self._describe(token)}"
            )
        _check_text(token.value, f"filter: the string at column {token.column}",
                    MAX_LABEL_VALUE_BYTES, allow_empty=True)  # fmt: skip
        return token.value

    def condition(self) -> Condition:
        key_token = self._take()
        if key_token.kind != "word":
            raise InvalidArgumentError(
                f"filter: expected a label key at column {key_token.column},"
                f" got {self._describe(key_token)}"
            )
        problem = label_key_problem(key_token.text)
        if problem is not None:
            raise InvalidArgumentError(
                f"filter: label key {key_token.text[:80]!r} at column {key_token.column}"
                f" {problem} ({LABEL_KEY_RULE}; Insert refuses such keys too)"
            )
        op_token = self._take()
        if op_token.kind == "op":
            return Condition(key_token.text, op_token.text, (self._expect_string(),))
        if op_token.kind == "word" and op_token.text.lower() == "in":
            opening = self._take()
            if opening.text != "[":
                raise InvalidArgumentError(
                    f"filter: expected [ after in at column {opening.column},"
                    f" got {self._describe(opening)}"
                )
            values = [self._expect_string()]
            while self._peek().text == ",":
                self._take()
                values.append(self._expect_string())
            closing = self._take()
            if closing.text != "]":
                raise InvalidArgumentError(
                    f"filter: expected , or ] at column {closing.column},"
                    f" got {self._describe(closing)}"
                )
            if len(values) > MAX_IN_VALUES:
                raise InvalidArgumentError(
                    f"filter: the list for {key_token.text!r} has {len(values)} values,"
                    f" over the limit of {MAX_IN_VALUES}"
                )
            return Condition(key_token.text, "in", tuple(sorted(set(values))))
        raise InvalidArgumentError(
            f"filter: expected ==, != or in after {key_token.text!r} at column"
            f" {op_token.column}, got {self._describe(op_token)}"
        )

    def parse(self) -> LabelFilter:
        conditions = [self.condition()]
        while self._peek().kind != "end":
            joiner = self._take()
            if joiner.kind != "word" or joiner.text.lower() != "and":
                raise InvalidArgumentError(
                    f"filter: expected `and` between conditions at column {joiner.column},"
                    f" got {self._describe(joiner)} (only `and` is supported)"
                )
            conditions.append(self.condition())
            if len(conditions) > MAX_FILTER_CONDITIONS:
                raise InvalidArgumentError(
                    f"filter has more than {MAX_FILTER_CONDITIONS} conditions"
                )
        unique = sorted(set(conditions), key=lambda c: (c.key, c.op, c.values))
        parsed = LabelFilter(tuple(unique))
        if parsed.terms > MAX_FILTER_TERMS:
            raise InvalidArgumentError(
                f"filter compares {parsed.terms} values in all, over the limit of"
                f" {MAX_FILTER_TERMS} per filter (each == and != counts one, each in list"
                " its distinct values)"
            )
        return parsed


def parse_filter(text: str) -> LabelFilter | None:
    """Parse SearchRequest.filter; None when it is empty or blank.

    Raises InvalidArgumentError naming the column of the first problem.
    """
    if not text.strip():
        return None
    if len(text) > MAX_FILTER_CHARS:
        raise InvalidArgumentError(
            f"filter is {len(text)} characters, over the limit of {MAX_FILTER_CHARS}"
        )
    return _Parser(_tokenize(text)).parse()
