"""Serving MMFTransformer with TorchServe: the library under ``handler.py``.

The path of a request, hook by hook (``handler.py``'s ``MMFHandler``):

- ``initialize``: ``HandlerSettings`` (model-config.yaml's ``handler:``
  section, validated once) and a ``Predictor`` built from the archive
  (``config.yaml``, labels CSV, vocabulary, weights) through the registry;
- ``preprocess``: ``parse_request`` (a multipart form or a KServe v2 body)
  -> ``Predictor.sample`` (decode one clip, run the Charades processors),
  collected with each request's error, if any, in a ``PreparedBatch``;
- ``inference``: ``Predictor.predict`` -> per-class probabilities;
- ``postprocess``: ``build_answer`` (``labels_above`` the threshold, scores,
  found/missed labels), wrapped by ``v2_response`` for KServe v2 requests.

``minimmf.serving.torchserve`` archives a model and runs a local TorchServe
(what ``scripts/archive.sh``, ``scripts/serve.sh``, the tests and the
benchmarks use).
"""
