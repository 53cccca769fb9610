"""One error tree: every exception class the gateway defines derives from GatewayError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import gateway
from gateway.errors import GatewayError


def gateway_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined (not merely imported) in a module of the ``gateway`` package."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name.endswith("__main__"):  # running it is the CLI
            continue
        module = importlib.import_module(info.name)
        for _name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{obj.__qualname__}"] = obj
    return found


def test_every_exception_class_in_the_gateway_is_a_gateway_error() -> None:
    classes = gateway_exception_classes()
    # The walk must really see the package: these live in four different layers.
    for known in (
        "gateway.errors.ConfigError",
        "gateway.normalize.schema.EventInvalid",
        "gateway.normalize.vendors.DecodeError",
        "gateway.sinks.deadletter.local.DeadLetterWriteError",
    ):
        assert known in classes
    outside = sorted(name for name, cls in classes.items() if not issubclass(cls, GatewayError))
    assert outside == []


def test_the_error_tree_drawing_names_every_public_exception_class() -> None:
    import gateway.errors as errors

    doc = errors.__doc__ or ""
    names = {cls.__name__ for cls in gateway_exception_classes().values() if not cls.__name__.startswith("_")}
    assert sorted(n for n in names if f" {n} " not in doc) == []
