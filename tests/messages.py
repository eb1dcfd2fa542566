"""The text of the error a call raises, for tests that pin error messages exactly."""

from __future__ import annotations

from typing import Any, Callable, Union

import pytest


def raised_message(fn: Callable[..., Any], *args: Any, error: Union[type, tuple] = (TypeError, ValueError),
                   **kwargs: Any) -> str:
    """``str()`` of the exception ``fn(*args, **kwargs)`` raises, which must be an ``error``."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    return str(info.value)
