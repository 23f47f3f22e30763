"""FindDuplicates' default similarity threshold, shared by Search, the CLI and the web page.

Chosen from `make eval` (docs/evaluation.md, "Duplicate threshold"), which measures
for each threshold the share of each edit kind's copies linked to their original and
the false links among the 2,300 distinct indexed pictures, with the default descriptor.
A new default descriptor changes the similarity scale: re-read that table.
"""

from __future__ import annotations

DEFAULT_DUPLICATE_THRESHOLD = 0.95
