"""Model inputs of the right shapes and types with random content, for
benchmarks and tests that need batches without decoding videos."""

from __future__ import annotations

import torch

from minimmf.common.sample import SampleList


def random_sample_list(batch_size: int, frames: int, crop: int, audio: int, seq_len: int = 128,
                       seed: int = 0) -> SampleList:
    """Charades MMFTransformer inputs of the right shapes and types, with
    random content and varied text lengths (for benchmarks and tests)."""
    generator = torch.Generator().manual_seed(seed)
    input_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        input_mask[row, : min(seq_len, 5 + 7 * row)] = 1
    input_ids = torch.randint(1000, 30000, (batch_size, seq_len), generator=generator) * input_mask
    return SampleList({
        "input_ids": input_ids,
        "input_mask": input_mask,
        "segment_ids": torch.zeros(batch_size, seq_len, dtype=torch.long),
        "video": torch.randn(batch_size, 3, frames, crop, crop, generator=generator),
        "audio": torch.rand(batch_size, 1, audio, audio, generator=generator),
        "dataset_name": "charades",
        "dataset_type": "test",
    })
