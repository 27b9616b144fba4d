"""Name -> class lookup, as in MMF: components register themselves with a
decorator and configs refer to them by name (``type: r2plus1d_18``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UnknownComponentError(ValueError):
    """A config names a component that is not registered."""


class Registry:
    # one table per kind of component; the public methods below are generated
    # from these names (register_model / get_model_class, ...)
    KINDS = (
        "model",
        "encoder",
        "processor",
        "builder",
        "transformer_backend",
        "transformer_head",
        "loss",
        "metric",
        "optimizer",
        "scheduler",
    )

    def __init__(self) -> None:
        self.mapping: dict[str, dict[str, Any]] = {kind: {} for kind in self.KINDS}
        self.mapping["state"] = {}

    def _register(self, kind: str, name: str) -> Callable[[type], type]:
        def wrap(cls: type) -> type:
            table = self.mapping[kind]
            if name in table and table[name] is not cls:
                raise KeyError(f"a {kind} named {name!r} is already registered")
            table[name] = cls
            return cls

        return wrap

    def _get(self, kind: str, name: str) -> Any:
        return self.mapping[kind].get(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.mapping[kind])

    def require(self, kind: str, name: str) -> Any:
        """The registered ``kind`` named ``name``; an error listing the known ones if absent."""
        found = self._get(kind, name)
        if found is None:
            known = ", ".join(self.names(kind)) or "none"
            raise UnknownComponentError(f"no {kind.replace('_', ' ')} named {name!r} (known: {known})")
        return found

    # free-form state (the running config, ...), as MMF's registry.register/get
    def register(self, name: str, obj: Any) -> None:
        self.mapping["state"][name] = obj

    def get(self, name: str, default: Any = None) -> Any:
        return self.mapping["state"].get(name, default)


def _add_kind_methods(kind: str) -> None:
    def register_fn(self: Registry, name: str) -> Callable[[type], type]:
        return self._register(kind, name)

    def get_fn(self: Registry, name: str) -> Any:
        return self._get(kind, name)

    register_fn.__name__ = f"register_{kind}"
    get_fn.__name__ = f"get_{kind}_class"
    setattr(Registry, register_fn.__name__, register_fn)
    setattr(Registry, get_fn.__name__, get_fn)


for _kind in Registry.KINDS:
    _add_kind_methods(_kind)

registry = Registry()
