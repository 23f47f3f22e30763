"""Rules on user-given text shared by the services and the command line."""

from __future__ import annotations

import unicodedata

# Unicode categories that show nothing: separators (Zs, Zl, Zp), controls (Cc) and
# format characters (Cf: zero-width space, joiners, BOM, direction marks...).
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})

BLANK_ID_RULE = (
    "an id needs at least one visible character (not only whitespace or invisible"
    " characters of Unicode categories Z*, Cc, Cf such as U+200B or U+FEFF)"
)


def has_visible_text(text: str) -> bool:
    """True when `text` has a character outside Unicode categories Z*, Cc and Cf."""
    return any(unicodedata.category(char) not in _INVISIBLE_CATEGORIES for char in text)
