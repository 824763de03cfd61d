"""Tables for people and for scripts: rich tables that fit the terminal, tab-separated text when piped.

A table is a list of `Column`s, each with a priority: on a narrow terminal the least important
columns go first, until the rest fit without cutting a value (numbers and names never wrap, text
columns such as descriptions wrap). Piped, or with --tsv, the same rows print as plain TSV with
every value whole (tabs and newlines inside a value become spaces).
"""

from __future__ import annotations

from dataclasses import dataclass

GAP = 3  # between two columns: one space of padding on each side and the (blank) separator


@dataclass(frozen=True)
class Column:
    header: str
    priority: int = 0  # 0 is never dropped; higher numbers are dropped first on a narrow terminal
    wrap: bool = False  # text that may wrap onto more lines (descriptions, reasons)
    min_width: int = 14  # the narrowest a wrapping column is squeezed to before a column is dropped
    right: bool = False  # numbers align right


def console():
    from rich.console import Console

    return Console(highlight=False)


def say(text: str) -> None:
    """A message for a person: wrapped to the terminal's width on a terminal, one whole line when piped."""
    out = console()
    if out.is_terminal:
        out.print(text, markup=False, overflow="fold")
    else:
        print(text, flush=True)


def plain(value: str) -> str:
    return " ".join(str(value).split())


def tsv(columns: list[Column], rows: list[list[str]]) -> str:
    lines = ["\t".join(c.header for c in columns)] + ["\t".join(plain(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def fit(columns: list[Column], rows: list[list[str]], width: int) -> list[int]:
    """The columns (indices) that fit `width`: drop the highest priority number first (the rightmost on a tie)."""

    def need(i: int) -> int:
        c = columns[i]
        longest = max([len(c.header), *(max((len(x) for x in str(r[i]).splitlines()), default=0) for r in rows)])
        return min(longest, max(c.min_width, 1)) if c.wrap else longest

    keep = list(range(len(columns)))
    while len(keep) > 1 and sum(need(i) for i in keep) + GAP * (len(keep) - 1) > width:
        droppable = [i for i in keep if columns[i].priority > 0]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (columns[i].priority, i)))
    return keep


def rich_table(columns: list[Column], rows: list[list[str]], width: int, title: str | None = None):
    """A rich Table of the columns that fit `width`."""
    from rich import box
    from rich.table import Table

    keep = fit(columns, rows, width)
    t = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        title_justify="left",
    )
    for i in keep:
        c = columns[i]
        t.add_column(
            c.header,
            justify="right" if c.right else "left",
            no_wrap=not c.wrap,
            overflow="fold",
            ratio=1 if c.wrap else None,
            min_width=None if c.wrap else len(c.header),
        )
    for row in rows:
        t.add_row(*(str(row[i]) for i in keep))
    return t


def show(columns: list[Column], rows: list[list[str]], as_tsv: bool = False, title: str | None = None) -> None:
    """A fitted table on a terminal; TSV when piped or asked."""
    out = console()
    if as_tsv or not out.is_terminal:
        print(tsv(columns, rows), end="")
        return
    out.print(rich_table(columns, rows, out.width, title))
