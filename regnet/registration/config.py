"""Registration settings from a YAML file or a mapping, checked before any image is read.

A config has the optional sections ``affine:`` and ``syn:``; their keys are the constructor
arguments of :class:`~regnet.registration.affine.AffineRegistration` and
:class:`~regnet.registration.syn.SyNRegistration`. Losses and optimisers are given by name
(``dissimilarity_function: mse | lncc | mi``, or a mapping ``{name: lncc, kernel_size: 9}``;
``regularization_function: diffusion | bending | elastic``; ``optimizer: adam | adamw | sgd |
rmsprop | normalised``, the last :class:`~regnet.registration.descent.NormalisedDescent`).
Unknown keys raise :class:`~regnet._checks.ConfigError` naming the key. Used by
:func:`regnet.registration.world.register_images`, the MONAI registration transforms and
``regnet register --config``.

Example::

    >>> config = load_config({"syn": {"scales": [4, 2], "iterations": [40, 20]}})
    >>> syn = config.build("syn", verbose=False)          # a SyNRegistration
    >>> config.settings("syn")["iterations"]
    [40, 20]
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from regnet._checks import ConfigError
from regnet.registration.affine import AffineRegistration
from regnet.registration.descent import NormalisedDescent
from regnet.registration.syn import SyNRegistration

__all__ = ["Config", "ConfigError", "jsonable", "load_config"]

_CLASSES = {"affine": AffineRegistration, "syn": SyNRegistration}
# Constructor arguments a config file cannot set, and why.
_NOT_IN_CONFIG = {
    "verbose": "progress output is set on the command line (--quiet)",
    "is_3d": "the dimension follows the images",
    "init_translation": "initial parameters are tensors; use 'init'",
    "init_rotation": "initial parameters are tensors; use 'init'",
    "init_zoom": "initial parameters are tensors; use 'init'",
    "init_shear": "initial parameters are tensors; use 'init'",
}


def _loss_classes() -> dict[str, Any]:
    from regnet import losses

    return {
        "mse": losses.MSELoss,
        "lncc": losses.LocalNCCLoss,
        "local_ncc": losses.LocalNCCLoss,
        "mi": losses.GlobalMILoss,
        "diffusion": losses.DiffusionLoss,
        "bending": losses.BendingEnergyLoss,
        "elastic": losses.LinearElasticityLoss,
    }


_SIMILARITIES = ("mse", "lncc", "local_ncc", "mi")
_REGULARISERS = ("diffusion", "bending", "elastic")
_OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop",
               "normalised": "NormalisedDescent"}


def _named_object(where: str, key: str, value, names: tuple[str, ...]):
    """``"lncc"`` or ``{"name": "lncc", **kwargs}`` -> the loss module."""
    if isinstance(value, str):
        name, kwargs = value, {}
    elif isinstance(value, Mapping) and "name" in value:
        kwargs = dict(value)
        name = kwargs.pop("name")
    else:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(names)} or a mapping with 'name' "
                          f"and its arguments, got {value!r}")
    if not isinstance(name, str) or name.lower() not in names:
        raise ConfigError(f"{where}: '{key}' has unknown name {name!r}; expected one of {', '.join(names)}")
    cls = _loss_classes()[name.lower()]
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: '{key}' ({name}): {error}") from None


def _convert(where: str, section: str, key: str, value):
    full = f"{section}.{key}"
    if key == "dissimilarity_function":
        return _named_object(where, full, value, _SIMILARITIES)
    if key == "regularization_function":
        return _named_object(where, full, value, _REGULARISERS)
    if key == "optimizer":
        if not isinstance(value, str) or value.lower() not in _OPTIMIZERS:
            raise ConfigError(f"{where}: '{full}' must be one of {', '.join(_OPTIMIZERS)}, got {value!r}")
        if value.lower() == "normalised":
            return NormalisedDescent
        return getattr(torch.optim, _OPTIMIZERS[value.lower()])
    if isinstance(value, list):
        return tuple(value)
    return value


def jsonable(value):
    """``value`` as JSON-ready data: non-finite floats -> ``None``, classes -> their name, other
    objects -> ``repr``; mappings and sequences recursively."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if inspect.isclass(value):
        return value.__name__
    return repr(value)


@dataclass
class Config:
    """A validated config: constructor keyword arguments per stage, and what to report."""

    kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: {"affine": {}, "syn": {}})
    source: str | None = None
    given: dict[str, dict[str, Any]] = field(default_factory=lambda: {"affine": {}, "syn": {}})

    def build(self, stage: str, verbose: bool):
        return _CLASSES[stage](verbose=verbose, **self.kwargs[stage])

    def settings(self, stage: str, ndim: int | None = None) -> dict[str, Any]:
        """Every constructor argument of ``stage`` (given or default), JSON-ready. With
        ``ndim``, defaults that depend on it (SyN's ``default_for``) are reported as resolved."""
        params = inspect.signature(_CLASSES[stage].__init__).parameters
        built = self.build(stage, verbose=False)
        out = {}
        for name, param in params.items():
            if name == "self" or name in _NOT_IN_CONFIG:
                continue
            value = self.given[stage].get(name, param.default)
            if value is None and name.endswith("_function"):  # a default the class fills in
                value = getattr(built, name, None)
            if value is None and ndim is not None and hasattr(built, "default_for"):
                value = built.default_for(name, ndim)  # a default that depends on ndim
            out[name] = jsonable(value)
        return out


def load_config(config=None) -> Config:
    """Read and check a registration config.

    Args:
        config: ``None`` (every default), a :class:`Config`, a mapping, or the path of a YAML
            file with the optional sections ``affine:`` and ``syn:``; their keys are the
            constructor arguments of :class:`AffineRegistration` and :class:`SyNRegistration`
            (see the module docstring for losses and optimisers given by name).

    Raises:
        ConfigError: unreadable YAML, an unknown section or key (named in the message), or a
            value the registration class rejects.
        FileNotFoundError: no such config file.
    """
    if isinstance(config, Config):
        return config
    where = "config"
    if config is None:
        data = {}
    elif isinstance(config, Mapping):
        data = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        import yaml

        path = Path(config)
        where = f"config {path}"
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigError(f"{where}: not valid YAML ({error})") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with sections 'affine:' and/or 'syn:', "
                              f"got {type(data).__name__}")
    else:
        raise TypeError(f"load_config: config must be None, a mapping or a YAML path, got {type(config).__name__}")

    result = Config(source=None if isinstance(config, Mapping) or config is None else str(config))
    for section, values in data.items():
        if section not in _CLASSES:
            hint = difflib.get_close_matches(str(section), list(_CLASSES), n=1)
            raise ConfigError(
                f"{where}: unknown key '{section}' (expected the sections 'affine' and 'syn')"
                + (f"; did you mean '{hint[0]}'?" if hint else "")
            )
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section '{section}' must be a mapping of arguments, got {values!r}")
        cls = _CLASSES[section]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for key, value in values.items():
            if key in _NOT_IN_CONFIG:
                raise ConfigError(f"{where}: key '{section}.{key}' cannot be set in a config: {_NOT_IN_CONFIG[key]}")
            if key not in allowed:
                settable = [p for p in allowed if p not in _NOT_IN_CONFIG]
                hint = difflib.get_close_matches(str(key), settable, n=1)
                raise ConfigError(
                    f"{where}: unknown key '{section}.{key}'"
                    + (f" (did you mean '{hint[0]}'?)" if hint else "")
                    + f"; {cls.__name__} takes: {', '.join(settable)}"
                )
            result.kwargs[section][key] = _convert(where, section, key, value)
            result.given[section][key] = value
        try:  # let the class check the values now, not after loading the images
            result.build(section, verbose=False)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{where}: section '{section}': {error}") from None
    return result
