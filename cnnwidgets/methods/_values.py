"""Checks on number arguments that the method functions share.

``True`` is not ``1.0``: a bool where a number is asked for is almost always a mistake (a mask
passed as the fill, a flag in the wrong position), so every method refuses bools, alone or inside
a sequence, array or tensor, instead of reading them as 0 and 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def holds_bool(value: object) -> bool:
    """Whether ``value`` is a bool, a bool array or tensor, or a sequence with a bool among its items."""
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, torch.Tensor):
        return value.dtype == torch.bool
    if isinstance(value, np.ndarray):
        return value.dtype == np.bool_
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return any(isinstance(item, (bool, np.bool_)) for item in value)
    return False
