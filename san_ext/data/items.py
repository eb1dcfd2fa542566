"""The records a converter reads: :class:`Source` (an opened input) and :class:`SourceItem` (one image).

The ground floor of ``san_ext.data``'s converters: ``builtin`` and ``sources`` build sources, ``converters`` reads
them, and this module imports neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

__all__ = ['Source', 'SourceItem']


@dataclass(frozen=True)
class SourceItem:
    """One input image: where it comes from (for messages), its data and its class id (None if unlabelled)."""

    name: str
    data: Union[Path, bytes, np.ndarray]  # a file to decode, encoded bytes, or uint8 [H, W] / [H, W, C]
    label: Optional[int] = None


@dataclass(frozen=True)
class Source:
    """An opened input: ``items()`` yields ``num_items`` :class:`SourceItem` in a fixed order."""

    kind: str
    path: str
    num_items: int
    items: Callable[[], Iterator[SourceItem]]
    has_labels: bool = False
    class_names: Optional[tuple[str, ...]] = None
    channels: int = 3  # output channels unless the caller asks otherwise
