"""MMF's processors: hand-checked small cases and the Charades pipelines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchaudio
from omegaconf import OmegaConf
from torchvision import transforms

from minimmf.datasets.processors.bert_processors import VocabularyNotFoundError, resolve_vocab_file
from minimmf.datasets.processors.processors import TruncateOrPad
from minimmf.utils.build import build_processors
from minimmf.utils.configuration import build_config
from tests.conftest import DIRECT_CONFIG


@pytest.fixture(scope="module")
def charades_processors():
    return build_processors(build_config(DIRECT_CONFIG).dataset_config.charades.processors)


def text_processor(max_seq_length: int = 128, vocab: str = "bert-base-uncased", mask_probability: float = 0):
    config = OmegaConf.create({"text": {"type": "bert_tokenizer", "params": {
        "tokenizer_config": {"type": vocab, "params": {"do_lower_case": True}},
        "mask_probability": mask_probability, "max_seq_length": max_seq_length}}})
    return build_processors(config)["text"]


def test_bert_tokenizer_hand_checked(charades_processors):
    out = charades_processors["text_processor"]({"text": "Hello, Café world!"})
    # bert-base-uncased ids: [CLS]=101 hello=7592 ,=1010 cafe=7668 world=2088 !=999 [SEP]=102
    assert out["input_ids"][:8].tolist() == [101, 7592, 1010, 7668, 2088, 999, 102, 0]
    assert out["tokens"] == ["[CLS]", "hello", ",", "cafe", "world", "!", "[SEP]"]
    assert out["input_mask"].tolist() == [1] * 7 + [0] * 121
    assert out["segment_ids"].tolist() == [0] * 128
    assert out["lm_label_ids"].tolist() == [-1] * 128
    assert out["input_ids"].dtype == torch.long and out["input_ids"].shape == (128,)


def test_bert_tokenizer_truncates_to_max_length():
    out = text_processor(max_seq_length=8)({"text": "one two three four five six seven eight nine"})
    assert out["tokens"] == ["[CLS]", "one", "two", "three", "four", "five", "six", "[SEP]"]
    assert out["input_mask"].tolist() == [1] * 8
    empty = text_processor(max_seq_length=8)({"text": ""})
    assert empty["input_ids"].tolist() == [101, 102, 0, 0, 0, 0, 0, 0]


def test_bert_tokenizer_masking_labels_originals():
    torch.manual_seed(0)
    out = text_processor(mask_probability=1.0)({"text": "hello world"})
    assert out["lm_label_ids"][:4].tolist() == [-1, 7592, 2088, -1]


def test_vocabulary_sources(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n")
    assert resolve_vocab_file(str(tmp_path)) == vocab
    assert resolve_vocab_file(str(vocab)) == vocab
    out = text_processor(vocab=str(vocab))({"text": "hello there world"})
    assert out["input_ids"][:5].tolist() == [2, 5, 1, 6, 3]
    with pytest.raises(VocabularyNotFoundError, match="tokenizer_config.type"):
        resolve_vocab_file("some-unknown-model")


def test_truncate_or_pad_keeps_channel_zero():
    processor = TruncateOrPad(output_size=4)
    audio = torch.arange(12, dtype=torch.float32).view(2, 6)
    assert processor(audio).tolist() == [0, 1, 2, 3]
    assert processor(audio[:, :2]).tolist() == [0, 1, 0, 0]
    assert processor(torch.zeros(1, 0)).tolist() == [0, 0, 0, 0]


@pytest.mark.filterwarnings("ignore:At least one mel filterbank")
def test_audio_pipeline_matches_mmf(charades_processors):
    audio = torch.sin(torch.linspace(0, 400, 5000)).unsqueeze(0) * 0.8
    out = charades_processors["audio_processor"](audio)
    mel = torchaudio.transforms.MelSpectrogram()(audio[0, :1000])
    assert mel.shape == (128, 6)
    # ToPILImage scales float by 255 into a byte, wrapping modulo 256 (MMF_FACTS 16)
    image = transforms.ToPILImage()(mel)
    assert list(image.tobytes()[:6]) == [int(v) % 256 for v in (mel[0] * 255).to(torch.int64).tolist()]
    expected = transforms.ToTensor()(transforms.Resize((224, 224))(image))
    assert out.shape == (1, 224, 224)
    assert torch.equal(out, expected)
    assert charades_processors["audio_processor"].samples_needed == 1000


def test_audio_pipeline_on_silence(charades_processors):
    assert torch.equal(charades_processors["audio_processor"](torch.zeros(1, 0)), torch.zeros(1, 224, 224))


def test_video_test_pipeline(charades_processors):
    frames = torch.randint(0, 256, (16, 240, 320, 3), dtype=torch.uint8)
    out = charades_processors["video_test_processor"](frames)
    assert out.shape == (3, 16, 112, 112) and out.dtype == torch.float32
    # by hand: rescale, per-frame bilinear resize without antialias, normalise, centre crop
    video = frames.permute(3, 0, 1, 2).float() / 255
    resized = F.interpolate(video.permute(1, 0, 2, 3), size=(128, 171), mode="bilinear",
                            align_corners=False).permute(1, 0, 2, 3)
    mean = torch.tensor([0.43216, 0.394666, 0.37645]).view(3, 1, 1, 1)
    std = torch.tensor([0.22803, 0.22145, 0.216989]).view(3, 1, 1, 1)
    normalised = (resized - mean) / std
    top, left = round((128 - 112) / 2), round((171 - 112) / 2)
    torch.testing.assert_close(out, normalised[..., top : top + 112, left : left + 112], atol=1e-5, rtol=1e-5)
    assert torch.equal(out, charades_processors["video_test_processor"](frames))  # deterministic


def test_video_train_pipeline_flips_and_crops_every_frame_alike(charades_processors):
    frame = torch.randint(0, 256, (1, 128, 171, 3), dtype=torch.uint8)
    frames = frame.repeat(16, 1, 1, 1)
    for _ in range(4):
        out = charades_processors["video_train_processor"](frames)
        assert out.shape == (3, 16, 112, 112)
        assert all(torch.equal(out[:, t], out[:, 0]) for t in range(16))


def test_antialias_is_a_resize_parameter():
    frames = torch.randint(0, 256, (2, 240, 320, 3), dtype=torch.uint8)

    def pipeline(antialias: bool):
        return build_processors(OmegaConf.create({"v": {"type": "video_transforms", "params": {"transforms": [
            "permute_and_rescale", {"type": "Resize", "params": {"size": [60, 80], "antialias": antialias}}]}}}))["v"]

    assert not torch.allclose(pipeline(True)(frames), pipeline(False)(frames))
