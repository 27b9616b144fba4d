"""The archived handler run in this process the way TorchServe's Python
worker runs it (the extracted archive, a ``ts.context.Context`` with the
model's YAML config and TorchServe's metrics): for tests that compare
TorchServe's answers with the handler's, and for benchmarks that measure
the serving overhead."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
from ts.torch_handler import base_handler

TORCHSERVE_METRICS_YAML = Path(base_handler.__file__).resolve().parent.parent / "configs" / "metrics.yaml"


def extract(mar: Path, into: Path) -> Path:
    """Unzip a .mar as TorchServe does before starting a worker."""
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(into)
    return into


def load_handler(model_dir: Path, model_yaml_config: dict | None = None, name: str = "MMF_model",
                 batch_size: int = 4) -> tuple[Any, Context]:
    """Import handler.py from an extracted archive and initialize it."""
    manifest = json.loads((model_dir / "MAR-INF" / "MANIFEST.json").read_text())
    spec = importlib.util.spec_from_file_location("mar_handler", model_dir / "handler.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as TorchServe's import would
    spec.loader.exec_module(module)
    context = Context(name, str(model_dir), manifest, batch_size, None, "0.12.0",
                      metrics=MetricsCacheYamlImpl(str(TORCHSERVE_METRICS_YAML)),
                      model_yaml_config=model_yaml_config or {})
    handler = module.MMFHandler()
    handler.initialize(context)
    return handler, context


def handle(handler: Any, context: Context, requests: list[dict[str, Any]],
           headers: list[dict[str, str]] | None = None) -> list[tuple[int, Any]]:
    """One batch through ``handler.handle``: (HTTP status, body) per request."""
    context.request_processor = [RequestProcessor(h) for h in (headers or [{} for _ in requests])]
    context.request_ids = {i: f"req{i}" for i in range(len(requests))}  # as TorchServe's worker sets them
    context.metrics.set_request_ids(context.request_ids)
    outputs = handler.handle(requests, context)
    statuses = [context.get_response_status(i)[0] or 200 for i in range(len(requests))]
    return list(zip(statuses, outputs, strict=True))
