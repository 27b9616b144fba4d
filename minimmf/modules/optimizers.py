"""Optimizers, registered under MMF's names."""

from __future__ import annotations

from torch.optim import AdamW

from minimmf.common.registry import registry

registry.register_optimizer("adam_w")(AdamW)
