"""The harness's one error type for bad input, at the bottom of the import graph (no imports of its own)."""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A bad configuration, found before any work starts. The message names key, value and what is allowed."""

    @classmethod
    def bad_value(cls, key: str, value: Any, allowed: str, why: str = "") -> ConfigError:
        reason = f" ({why})" if why else ""
        return cls(f"{key}={value!r} is not allowed{reason}; allowed: {allowed}.")
