"""Serving a trained model with TorchServe: the library under ``handler.py``.

The path of a request, hook by hook (``handler.py``'s ``MMFHandler``):

- ``initialize``: ``HandlerSettings`` (model-config.yaml's ``handler:``
  section, validated once) and a ``Predictor`` built from the archive's files
  (``model_files``: found by its manifest), through the model's and the
  dataset's interfaces (``BaseModel``, ``BaseDatasetBuilder``);
- ``preprocess``: ``parse_request`` (a multipart form or a KServe v2 body)
  -> ``Predictor.samples`` (one decoding pass, the dataset's processors),
  collected with each request's error, if any, in a ``PreparedBatch``;
- ``inference``: ``Predictor.predict`` -> per-class probabilities;
- ``postprocess``: ``build_answer`` (labels by ``modules.predictions``,
  scores, found/missed labels, the timeline), wrapped by ``v2_response`` for
  KServe v2 requests.

``minimmf.serving.torchserve`` archives a model and runs a local TorchServe
(what ``scripts/archive.sh``, ``scripts/serve.sh``, the tests and the
benchmarks use).
"""
