"""What a user typed, made inert for the screen it lands on: Markdown, a spreadsheet, a terminal.

One home for every such rule, so the Web UI, the CSV export, the import report and the CLI
agree. Each function is total: any string in, a string out that shows as typed and does
nothing else (no link, image, emphasis or HTML; no formula; no control sequence).
"""

from __future__ import annotations

import re

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&:@])")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# C0 and C1 controls (ESC, CSI, BEL, ...) and the line and paragraph separators; \n and \t stay.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def markdown(text: str) -> str:
    """`text` as Markdown that renders exactly as typed, on one line: every character Markdown
    (or GitHub's autolinks: `:`, `@`, `.`) could read as syntax is backslash-escaped."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(text).split()))


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: one that would start a formula gets a leading `'`
    (OWASP's advice for CSV injection). Numbers and booleans pass as they are."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def terminal(text: str) -> str:
    """`text` without control characters: an escape sequence in a name cannot move the
    cursor, recolour, retitle or clear someone's terminal. Shown as `?` instead."""
    return _CONTROL.sub("?", text)
