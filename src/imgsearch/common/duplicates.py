"""FindDuplicates' default similarity threshold, shared by Search, the CLI and the web page.

Chosen from `make eval` (docs/evaluation.md, "Duplicate threshold"), which measures
for each threshold the share of each edit kind's copies linked to their original and
the false links among the 2,300 distinct indexed pictures, with the default descriptor.
A new default descriptor changes the similarity scale: re-read that table.

0.9 with `efficientnet_lite0-gem-mlb4-ms48-lw512` (512-d): no false link among
pictures of different sources at 0.88 and above (5 pairs at 0.80, 1 at 0.85, of the
2.57 million pairs of different sources), and at 0.9 it links 75% of 70% centre
crops, 66% of JPEG quality-20 copies, 81% of mirror images and 77% of brightened
copies to their originals; at 0.95, the previous default, only 10%, 35%, 25% and 43%.
"""

from __future__ import annotations

DEFAULT_DUPLICATE_THRESHOLD = 0.9
