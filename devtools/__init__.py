"""Development helpers shared by ``tests/`` and ``bench/``, not part of the
installed package: hostile upload generators (``hostile_inputs``), the
archived handler run in-process as TorchServe's worker runs it (``worker``)
and random model inputs (``samples``)."""
