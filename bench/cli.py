"""The benches' command lines, declared by their defaults (one place that turns defaults into flags)."""

from __future__ import annotations

import argparse
from pathlib import Path


def options(helps: dict[str, str] | None = None, **defaults: object) -> argparse.Namespace:
    """Parse `--name` for each default (`name_with_underscores` as `--name-with-underscores`).

    A flag's type is its default's: False makes a switch, None a path (`Path`), an int or float a
    number, anything else a string. `helps` gives a flag its help text.
    """
    ap = argparse.ArgumentParser()
    for name, default in defaults.items():
        flag, text = "--" + name.replace("_", "-"), (helps or {}).get(name)
        if default is False:
            ap.add_argument(flag, action="store_true", help=text)
        else:
            kind = Path if default is None else type(default)
            ap.add_argument(flag, type=kind, default=default, help=text)
    return ap.parse_args()
