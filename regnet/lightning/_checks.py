"""Validation of configuration values: ``ValueError`` / ``TypeError`` naming the key, what was
expected and what was given (the message a user of a YAML config needs)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


class ConfigError(ValueError):
    """A configuration value that cannot be used (a ``ValueError``)."""


def choice(owner: str, key: str, value, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{owner}: {key} must be one of {tuple(options)}, got {value!r}")
    return value


def number(owner: str, key: str, value, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{owner}: {key} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{owner}: {key} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{owner}: {key} must be >= {minimum}, got {value!r}")
    return float(value)


def integer(owner: str, key: str, value, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{owner}: {key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{owner}: {key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def weights(owner: str, key: str, value, options: Sequence[str], *, allow_empty: bool = True) -> dict[str, float]:
    """A ``{term: weight}`` mapping with terms from ``options`` and weights >= 0."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{owner}: {key} must be a mapping {{term: weight}} with terms from {tuple(options)}, got {value!r}"
        )
    out = {}
    for term, weight in value.items():
        if term not in options:
            raise ConfigError(f"{owner}: {key} has unknown term {term!r}; expected terms from {tuple(options)}")
        out[term] = number(owner, f"{key}.{term}", weight, minimum=0.0)
    if not allow_empty and not any(out.values()):
        raise ConfigError(f"{owner}: {key} must give at least one term a weight > 0, got {value!r}")
    return out


def int_sequence(owner: str, key: str, value, *, length: int | None = None, minimum: int = 1,
                 min_length: int = 1) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"{owner}: {key} must be a list of integers, got {value!r}")
    if length is not None and len(value) != length:
        raise ConfigError(f"{owner}: {key} must have {length} entries, got {list(value)!r}")
    if len(value) < min_length:
        raise ConfigError(f"{owner}: {key} must have at least {min_length} entries, got {list(value)!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{owner}: {key} must hold integers >= {minimum}, got {list(value)!r}")
    return [int(v) for v in value]
