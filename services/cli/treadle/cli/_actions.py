"""The parser shape `treadle queue` and `treadle schedule` share: `treadle NOUN
ACTION`, where `list` and the simple actions take at most the object's name."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

AddAddress = Callable[[argparse.ArgumentParser], None]


def add_noun(sub: Any, noun: str, help: str, description: str) -> Any:
    """Add `treadle NOUN`; returns its ACTION subparsers (`args.NOUN_command`)."""
    parser = sub.add_parser(noun, help=help, description=description)
    return parser.add_subparsers(dest=f"{noun}_command", required=True, metavar="ACTION")


def add_simple(
    actions: Any, add_address: AddAddress, noun: str, by_name: Sequence[tuple[str, str]]
) -> None:
    """Add `list`, then each (action, help) of `by_name`, which takes the object's name."""
    listing = actions.add_parser("list", help=f"list every {noun}", description=f"List {noun}s.")
    add_address(listing)
    for action, text in by_name:
        p = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("name", help=f"{noun} name")
        add_address(p)
