"""A plain-text table: what every benchmark returns and prints.

Columns are separated by at least two spaces and no cell holds two spaces in a row, so the printed
text splits back into cells with `re.split(r"\\s{2,}", line)` (the smoke test relies on it).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

GAP = "  "


@dataclass
class Table:
    """`title` (one line), `columns` (header cells), `rows` (each as many cells as columns), `notes`."""

    title: str
    columns: Sequence[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        row = [" ".join(str(c).split()) or "-" for c in cells]
        if len(row) != len(self.columns):
            raise ValueError(f"{len(row)} cells for {len(self.columns)} columns")
        self.rows.append(row)

    def render(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            # Text left-aligned, figures right-aligned.
            out = [
                cell.rjust(w) if _numeric(cell) else cell.ljust(w)
                for cell, w in zip(cells, widths, strict=True)
            ]
            return GAP.join(out).rstrip()

        parts = [f"== {self.title} ==", line(self.columns), GAP.join("-" * w for w in widths)]
        parts += [line(row) for row in self.rows]
        parts += [f"   {note}" for note in self.notes]
        return "\n".join(parts)


def _numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "").replace("%", "").replace(" ", "").lstrip("-")
    return stripped.isdigit()


def count(n: int) -> str:
    return f"{n:,}"


def num(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def progress(message: str) -> None:
    """One line on stderr while a long benchmark runs (the tables go to stdout)."""
    print(f"   .. {message}", file=sys.stderr, flush=True)
