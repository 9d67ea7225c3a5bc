"""Progress display shared by the fit pipeline, evaluation, prediction and the CLI (stderr only)."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator

__all__ = ["progress_bar", "progress_iter"]


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "img"):
    """A tqdm bar on stderr, or None when ``enabled`` is false or tqdm is not installed."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def progress_iter(items: Iterable[Any], *, total: int, desc: str, enabled: bool = True) -> Iterator[Any]:
    """Wrap an iterable with tqdm if it is installed, else a plain counter on stderr."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, total=total, desc=desc, unit="img", file=sys.stderr, leave=False)
        return
    tty = sys.stderr.isatty()
    step = max(1, total // 20)
    for i, item in enumerate(items, 1):
        yield item
        if tty or i == total or i % step == 0:
            sys.stderr.write(f"\r{desc}: {i}/{total}" if tty else f"{desc}: {i}/{total}\n")
            sys.stderr.flush()
    if tty:
        sys.stderr.write("\n")
