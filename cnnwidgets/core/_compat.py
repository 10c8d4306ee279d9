"""Checks, at import, that the installed torch can work with the installed NumPy."""

from __future__ import annotations

import numpy as np
import torch


def check_numpy_bridge() -> None:
    """Raise a clear ImportError when torch cannot exchange arrays with this NumPy.

    ``torch>=2.1`` allows releases built against NumPy 1.x (torch before 2.3), and pip pairs them
    with NumPy 2, the newest. torch then only warns at import and fails at the first
    ``Tensor.numpy()``, which cnnwidgets calls for every picture it draws.
    """
    try:
        back = torch.from_numpy(np.zeros(2, dtype=np.float32)).numpy()
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ImportError(
            f"torch {torch.__version__} cannot exchange arrays with NumPy {np.__version__} ({exc}). "
            "torch releases before 2.3 were built for NumPy 1.x: install 'numpy<2', or torch>=2.3 "
            "with a matching torchvision"
        ) from exc
    if not isinstance(back, np.ndarray):
        raise ImportError(f"torch {torch.__version__} returned {type(back).__name__} for Tensor.numpy()")  # noqa: TRY004
