"""Fine-tuning the text encoder (pipeline/training/text_encoder.py) on the packaged MiniLM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from extractors.text import SentenceTextExtractor
from pipeline.cli import main
from pipeline.training.text_encoder import FinetuneSettings, finetune_text_encoder, read_record

GLAD = ["what a lovely day", "I got the job", "we won the game", "this is wonderful news",
        "I love this place", "thank you so much", "that was a great party", "best day ever"]  # fmt: skip
MAD = ["get out of my room", "you broke it again", "I hate waiting here", "stop lying to me",
       "this is a disgrace", "leave me alone now", "you never listen", "that was so rude"]  # fmt: skip
LABELS = ["glad", "mad"]
SETTINGS = FinetuneSettings(base="minilm", epochs=3, trainable_layers=2, lr=1e-4, batch_size=4)


def _data(test_text: str = "the unseen test sentence"):
    """6 train + 2 dev rows per class, and one test row."""
    texts, labels, splits = [], [], []
    for label, sentences in enumerate((GLAD, MAD)):
        texts += sentences
        labels += [label] * len(sentences)
        splits += ["train"] * 6 + ["dev"] * 2
    return texts + [test_text], labels + [0], splits + ["test"]


def _separation(extractor: SentenceTextExtractor, texts, labels) -> float:
    """Mean cosine to the own class's centroid minus to the other's (vectors are unit norm)."""
    x = np.stack(extractor(texts))  # [N, D]
    y = np.array(labels)
    centroids = np.stack([x[y == c].mean(0) for c in (0, 1)])  # [2, D]
    cos = x @ centroids.T  # [N, 2]
    return float(np.mean(cos[np.arange(len(y)), y] - cos[np.arange(len(y)), 1 - y]))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "minilm-glad-mad"
    texts, labels, splits = _data()
    record = finetune_text_encoder(texts, labels, splits, LABELS, out, SETTINGS, progress=False)
    return out, record


def test_the_tuned_encoder_is_a_sentence_transformers_folder_that_separates_the_labels(tuned):
    out, record = tuned
    base = SentenceTextExtractor("minilm")
    mine = SentenceTextExtractor(str(out))
    assert mine.spec.dim == base.spec.dim == 384
    assert mine.weights_hash != base.weights_hash  # its own identity in every feature spec
    texts, labels, splits = _data()
    train = [i for i, s in enumerate(splits) if s == "train"]
    before = _separation(base, [texts[i] for i in train], [labels[i] for i in train])
    after = _separation(mine, [texts[i] for i in train], [labels[i] for i in train])
    assert after > before + 0.02, (before, after)  # measured: 0.201 -> 0.239
    # The record: what it was made from, and each epoch's dev scores; the kept epoch is the best.
    assert record == read_record(out)
    assert record["rows"] == {"train": 12, "dev": 4}
    assert record["base_weights_sha256"] == base.weights_hash
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    best = max(record["epochs"], key=lambda e: e["dev_weighted_f1"])
    assert record["best_epoch"] == best["epoch"]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_same_data_and_settings_reuse_and_test_rows_are_not_read(tuned):
    out, record = tuned
    texts, labels, splits = _data(test_text="a different test sentence")
    again = finetune_text_encoder(texts, labels, splits, LABELS, out, SETTINGS, progress=False)
    assert again == record  # returned without training: the test row is not part of the data


def test_other_settings_or_data_are_refused_not_reused(tuned):
    out, _ = tuned
    texts, labels, splits = _data()
    other = FinetuneSettings(**{**SETTINGS.__dict__, "epochs": 1})
    with pytest.raises(ValueError, match="other epochs"):
        finetune_text_encoder(texts, labels, splits, LABELS, out, other, progress=False)
    texts[12] = "a changed dev sentence"
    with pytest.raises(ValueError, match="other data"):
        finetune_text_encoder(texts, labels, splits, LABELS, out, SETTINGS, progress=False)


def test_bad_data_is_refused_with_what_is_wrong(tmp_path):
    texts, labels, splits = _data()
    no_dev = ["train" if s == "dev" else s for s in splits]
    with pytest.raises(ValueError, match="found 16 train, 0 dev"):
        finetune_text_encoder(texts, labels, no_dev, LABELS, tmp_path / "x", SETTINGS)
    labels[3] = 7
    with pytest.raises(ValueError, match="row 3: label 7 outside 0..1"):
        finetune_text_encoder(texts, labels, splits, LABELS, tmp_path / "x", SETTINGS)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="not a fine-tuned encoder"):
        finetune_text_encoder(*_data(), LABELS, tmp_path / "taken", SETTINGS)
    assert not (tmp_path / "x").exists()


def test_erc_finetune_text_reads_a_manifest(tmp_path, capsys):
    texts, labels, splits = _data()
    rows = [
        {"dialogue_id": f"d{i}", "utterance_id": f"u{i}", "speaker": "A", "start_s": 0.0,
         "end_s": 1.0, "text": t, "label": LABELS[y], "split": s}
        for i, (t, y, s) in enumerate(zip(texts, labels, splits, strict=True))
    ]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "enc"
    argv = ["finetune-text", str(manifest), "--out", str(out), "--base", "minilm",
            "--epochs", "1", "--layers", "1"]  # fmt: skip
    assert main(argv) == 0
    assert "best epoch 1/1: dev W-F1" in capsys.readouterr().out
    record = read_record(out)
    assert record["label_names"] == ["glad", "mad"] and record["rows"] == {"train": 12, "dev": 4}
    assert record["source"] == str(manifest)


def test_settings_are_checked_against_their_declared_ranges():
    with pytest.raises(ValueError, match="epochs=0: expected"):
        FinetuneSettings(epochs=0)
    with pytest.raises(ValueError, match="warmup=1.0: expected"):
        FinetuneSettings(warmup=1.0)
