"""encode_split shapes/dtypes/corrupt images; WordPiece tokenizer round trip and determinism."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedmm.data.encode import encode_split, load_image
from fedmm.data.manifest import load_manifest
from fedmm.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, train_wordpiece

from .helpers import write_csv, write_png

CORPUS = [
    "No pleural effusion. Patchy opacity in the right lower zone.",
    "Fever and productive cough; crackles at the left base.",
    "Post-operative day 2, shallow breathing. No pneumothorax.",
    "Heart size may be at the upper limit of normal. Cannot exclude small effusion.",
    "Lungs are clear. No acute cardiopulmonary process.",
] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_wordpiece(CORPUS, folder, vocab_size=300)
    return load_tokenizer(folder)


def test_train_wordpiece_vocab_and_round_trip(tmp_path: Path, tokenizer) -> None:
    vocab = (tmp_path / "v").joinpath("vocab.txt")
    path = train_wordpiece(CORPUS + [None, ""], tmp_path / "v", vocab_size=300)
    assert path == vocab
    tokens = vocab.read_text().splitlines()
    assert tokens[:5] == SPECIAL_TOKENS and len(tokens) == len(set(tokens)) and len(tokens) <= 300
    assert {"effusion", "opacity", "##s"} <= set(tokens)
    ids = tokenizer("No pleural effusion, cough.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "no", "pleural", "effusion", ",", "cough", ".", "[SEP]"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "no pleural effusion, cough."
    unseen = tokenizer.convert_ids_to_tokens(tokenizer("pneumothoraces")["input_ids"])
    assert "[UNK]" not in unseen and unseen[1] == "pneumothora" or len(unseen) > 3


def test_train_wordpiece_deterministic_across_processes(tmp_path: Path) -> None:
    train_wordpiece(CORPUS, tmp_path / "a", vocab_size=150)
    (tmp_path / "corpus.json").write_text(json.dumps(CORPUS))
    code = ("import json, sys; from fedmm.data.tokenizer import train_wordpiece; "
            "train_wordpiece(json.load(open(sys.argv[2])), sys.argv[1], vocab_size=150)")
    subprocess.run([sys.executable, "-P", "-c", code, str(tmp_path / "b"), str(tmp_path / "corpus.json")], check=True)
    assert (tmp_path / "a" / "vocab.txt").read_bytes() == (tmp_path / "b" / "vocab.txt").read_bytes()


def test_load_tokenizer_errors_and_hf_folder(tmp_path: Path, tokenizer) -> None:
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)
    tokenizer.save_pretrained(tmp_path / "hf")          # a local Hugging Face folder
    again = load_tokenizer(tmp_path / "hf")
    text = "Fever, no effusion."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.fixture()
def small_set(tmp_path: Path) -> Path:
    write_png(tmp_path / "im" / "wide.png", 0, shape=(10, 30))
    rgb = tmp_path / "im" / "rgb.png"
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(rgb)
    deep = tmp_path / "im" / "deep.png"
    Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).save(deep)
    write_png(tmp_path / "im" / "bad.png", 1)
    write_csv(tmp_path, ["id", "image", "text", "label", "split"], [
        ["w", "im/wide.png", "no pleural effusion " * 40, "b", "train"],
        ["r", "im/rgb.png", "", "a", "train"],
        ["t", "", "fever and cough", "a", "train"],
        ["d", "im/deep.png", "shallow breathing", "b", "train"],
        ["x", "im/bad.png", "lungs are clear", "a", "train"],
    ])
    return tmp_path


def test_encode_split_shapes_and_values(small_set: Path, tokenizer) -> None:
    data = load_manifest(small_set)
    enc = encode_split(data, tokenizer, image_size=16, max_len=12)
    assert len(enc) == 5 and enc.ids == ["w", "r", "t", "d", "x"]
    assert enc.images.shape == (5, 1, 16, 16) and enc.images.dtype == torch.uint8
    assert enc.input_ids.shape == (5, 12) and enc.input_ids.dtype == torch.int64
    assert enc.attention_mask.dtype == torch.bool and enc.labels.dtype == torch.int64
    assert enc.has_image.tolist() == [True, True, False, True, True]
    assert enc.has_text.tolist() == [True, False, True, True, True]
    assert enc.labels.tolist() == [1, 0, 0, 1, 0] and enc.classes == ["a", "b"]
    assert enc.attention_mask[0].all()                       # truncated to max_len
    assert not enc.attention_mask[1].any() and (enc.input_ids[1] == tokenizer.pad_token_id).all()
    assert enc.input_ids[2, 0] == tokenizer.cls_token_id and enc.attention_mask[2].sum() == 5
    assert (enc.images[2] == 0).all()
    # wide image: padded to a square with black bands above and below the content
    assert (enc.images[0, 0, :4] == 0).all() and enc.images[0, 0, 6:10].float().mean() > 60
    assert (enc.images[1] == 200).all()                      # RGB -> gray
    assert enc.images[3].max() == 255 and enc.images[3].min() == 0   # 16-bit rescaled, not clipped


def test_encode_split_corrupt_image_becomes_issue(small_set: Path, tokenizer) -> None:
    data = load_manifest(small_set)
    (small_set / "im" / "bad.png").write_bytes((small_set / "im" / "bad.png").read_bytes()[:60])
    before = len(data.issues)
    enc = encode_split(data, tokenizer, image_size=16, max_len=8)
    assert not enc.has_image[4] and enc.has_text[4] and (enc.images[4] == 0).all()
    new = data.issues[before:]
    assert len(new) == 1 and new[0].row == 6 and "cannot decode image" in new[0].reason
    assert "image dropped" in new[0].reason


def test_encode_split_drops_rows_left_without_modality(small_set: Path, tokenizer) -> None:
    data = load_manifest(small_set)
    (small_set / "im" / "rgb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))   # row 'r' has no text
    enc = encode_split(data, tokenizer, image_size=16, max_len=8)
    assert enc.ids == ["w", "t", "d", "x"] and enc.images.shape[0] == 4 and enc.labels.tolist() == [1, 0, 1, 0]
    assert (enc.has_image | enc.has_text).all()
    assert "row dropped" in data.issues[-1].reason and data.issues[-1].row == 3


def test_subset_and_multilabel(tmp_path: Path, tokenizer) -> None:
    write_csv(tmp_path, ["id", "image", "text", "labels", "split"], [
        ["1", "", "cough", "a|c", ""], ["2", "", "fever", "b", ""], ["3", "", "clear", "c", ""]])
    enc = encode_split(load_manifest(tmp_path), tokenizer, image_size=8, max_len=6)
    assert enc.multilabel and enc.labels.dtype == torch.float32
    assert enc.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    sub = enc.subset(torch.tensor([2, 0]))
    assert sub.ids == ["3", "1"] and sub.labels.tolist() == [[0, 0, 1], [1, 0, 1]]
    assert enc.subset(torch.tensor([False, True, False])).ids == ["2"]
    assert enc.subset(slice(1, None)).ids == ["2", "3"] and enc.subset([1]).input_ids.shape == (1, 6)
    assert len(enc.subset(np.array([0, 1, 2]))) == 3


def test_load_image_resizes(tmp_path: Path) -> None:
    path = write_png(tmp_path / "big.png", 5, size=100)
    assert load_image(path, 32).shape == (32, 32)
