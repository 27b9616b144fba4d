"""Name -> class lookup, as in MMF: components register themselves with a
decorator and configs refer to them by name (``type: r2plus1d_18``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class UnknownComponentError(ValueError):
    """A config names a component that is not registered."""


class Registry:
    """One table per kind of component, with MMF's ``register_<kind>``
    decorators and ``get_<kind>_class`` lookups (None when absent)."""

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

    def _register(self, kind: str, name: str) -> Callable[[Any], Any]:
        def wrap(component: Any) -> Any:
            table = self.mapping[kind]
            if name in table and table[name] is not component:
                raise KeyError(f"a {kind} named {name!r} is already registered")
            table[name] = component
            return component

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

    # ------------------------------------------------------------ registration

    def register_model(self, name: str) -> Callable[[Any], Any]:
        return self._register("model", name)

    def register_encoder(self, name: str) -> Callable[[Any], Any]:
        return self._register("encoder", name)

    def register_processor(self, name: str) -> Callable[[Any], Any]:
        return self._register("processor", name)

    def register_builder(self, name: str) -> Callable[[Any], Any]:
        return self._register("builder", name)

    def register_transformer_backend(self, name: str) -> Callable[[Any], Any]:
        return self._register("transformer_backend", name)

    def register_transformer_head(self, name: str) -> Callable[[Any], Any]:
        return self._register("transformer_head", name)

    def register_loss(self, name: str) -> Callable[[Any], Any]:
        return self._register("loss", name)

    def register_metric(self, name: str) -> Callable[[Any], Any]:
        return self._register("metric", name)

    def register_optimizer(self, name: str) -> Callable[[Any], Any]:
        return self._register("optimizer", name)

    def register_scheduler(self, name: str) -> Callable[[Any], Any]:
        return self._register("scheduler", name)

    # ------------------------------------------------------------------ lookup

    def get_model_class(self, name: str) -> Any:
        return self._get("model", name)

    def get_encoder_class(self, name: str) -> Any:
        return self._get("encoder", name)

    def get_processor_class(self, name: str) -> Any:
        return self._get("processor", name)

    def get_builder_class(self, name: str) -> Any:
        return self._get("builder", name)

    def get_transformer_backend_class(self, name: str) -> Any:
        return self._get("transformer_backend", name)

    def get_transformer_head_class(self, name: str) -> Any:
        return self._get("transformer_head", name)

    def get_loss_class(self, name: str) -> Any:
        return self._get("loss", name)

    def get_metric_class(self, name: str) -> Any:
        return self._get("metric", name)

    def get_optimizer_class(self, name: str) -> Any:
        return self._get("optimizer", name)

    def get_scheduler_class(self, name: str) -> Any:
        return self._get("scheduler", name)


registry = Registry()
