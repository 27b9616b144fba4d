"""Learning-rate schedules, registered under MMF's names (``warmup_linear``,
``warmup_cosine``: linear warm-up, then linear or half-cosine decay to 0)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from minimmf.common.registry import registry


@registry.register_scheduler("warmup_linear")
def warmup_linear(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int) -> LambdaLR:
    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))

    return LambdaLR(optimizer, factor)


@registry.register_scheduler("warmup_cosine")
def warmup_cosine(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                  num_cycles: float = 0.5) -> LambdaLR:
    def factor(step: int) -> float:
        if step < num_warmup_steps:
            return step / max(1, num_warmup_steps)
        progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))

    return LambdaLR(optimizer, factor)
