"""Context augmentation (crop_context): which utterances a crop keeps, that batches built from
crops hold exactly those utterances' features, masks and labels, that it is off bit for bit at
p = 0 and reproducible from a seed, and that training with it runs, micro-batched and modulated."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from model.ada2i import Ada2I
from model.objective import IGNORE, ada2i_loss
from pipeline.features.importers.synthetic import make_synthetic
from pipeline.training.data import (
    SubDialogue,
    batch_counts,
    collate,
    crop_context,
    dialogue_rows,
    micro_batches,
    sub_dialogue,
)
from pipeline.training.train import configs_for, train
from pipeline.training.train_config import SettingsError, coerce_settings

LABELS = ["neu", "hap", "sad", "ang"]


def small(seed=0):
    return make_synthetic(
        n_dialogues={"train": 16, "dev": 4, "test": 6},
        utterances=26 * 12,
        dims={"t": 16, "a": 12, "v": 20},
        signal={"t": 0.9, "a": 0.5, "v": 0.3},
        label_names=LABELS,
        seed=seed,
        missing_rate={"v": 0.3},
    )


def crops(fs, p=1.0, share=0.5, subset_max=10, seed=0, rounds=1):
    g = torch.Generator().manual_seed(seed)
    dialogues = fs.split("train")
    return [c for _ in range(rounds) for c in crop_context(dialogues, p, share, subset_max, g)]


def kept(fs, c):
    source = next(d for d in fs.dialogues if d.id == c.id)
    rows = c.rows if isinstance(c, SubDialogue) else list(range(c.start, c.start + c.length))
    return source, [r - source.start for r in rows]


def test_p0_keeps_every_dialogue_and_draws_nothing():
    fs = small()
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    out = crop_context(fs.split("train"), 0.0, 0.5, 10, g)
    assert all(a is b for a, b in zip(out, fs.split("train"), strict=True))
    assert torch.equal(g.get_state(), state)  # batch order and other draws stay as they were


def test_windows_are_contiguous_and_reach_every_length_down_to_one():
    fs = small()
    lengths = set()
    for c in crops(fs, share=0.0, rounds=20):
        source, pos = kept(fs, c)
        assert pos == list(range(pos[0], pos[0] + len(pos)))  # contiguous
        assert pos[0] >= 0 and pos[-1] < source.length
        lengths.add(len(pos))
    assert 1 in lengths and max(lengths) > 10  # from one utterance up to long windows


def test_subsets_are_ordered_bounded_and_not_only_windows():
    fs = small()
    sizes, gapped = set(), 0
    for c in crops(fs, share=1.0, subset_max=4, rounds=20):
        source, pos = kept(fs, c)
        assert pos == sorted(set(pos)) and pos[-1] < source.length  # in order, no repeats
        assert 1 <= len(pos) <= 4
        sizes.add(len(pos))
        gapped += pos != list(range(pos[0], pos[0] + len(pos)))
    assert sizes == {1, 2, 3, 4}
    assert gapped > 0  # non-adjacent utterances, like a few clips of a long dialogue


def test_p_is_the_share_of_dialogues_cropped():
    fs = small()
    out = crops(fs, p=0.5, rounds=200)
    # A window can draw the whole dialogue (1 in L), which stays the dialogue itself.
    share = sum(isinstance(c, SubDialogue) for c in out) / len(out)
    assert 0.42 < share < 0.53


def test_same_seed_same_crops_other_seed_other_crops():
    fs = small()

    def rows(cs):
        return [list(range(c.start, c.start + c.length)) if not isinstance(c, SubDialogue)
                else c.rows for c in cs]  # fmt: skip

    assert rows(crops(fs, seed=5, rounds=3)) == rows(crops(fs, seed=5, rounds=3))
    assert rows(crops(fs, seed=5, rounds=3)) != rows(crops(fs, seed=6, rounds=3))


def test_batch_of_crops_holds_the_kept_utterances_row_for_row():
    fs = small()
    fs.labels[fs.dialogues[0].start + 1] = -1  # an unlabelled utterance stays unlabelled
    d = fs.split("train")[0]
    keep = [0, 1, 4, 7]
    c = sub_dialogue(d, keep)
    other = fs.split("train")[1]  # longer than the crop: the crop's row is padded
    batch = collate(fs, [c, other])
    t = batch.utterance_mask.shape[1]
    assert t == max(other.length, len(keep))
    assert batch.utterance_mask[0].tolist() == [True] * 4 + [False] * (t - 4)
    for j, pos in enumerate(keep):
        row = d.start + pos
        for m in fs.features:
            assert torch.equal(batch.features[m][0, j], fs.features[m][row])
            assert bool(batch.modality_mask[m][0, j]) == bool(fs.present[m][row])
        y = int(fs.labels[row])
        assert int(batch.labels[0, j]) == (y if y >= 0 else IGNORE)
    assert int(batch.labels[0, 1]) == IGNORE
    for m in fs.features:  # padding is zero and absent
        assert not batch.features[m][0, 4:].any() and not batch.modality_mask[m][0, 4:].any()
    assert (batch.labels[0, 4:] == IGNORE).all()
    # Speakers are numbered in order of appearance among the kept utterances.
    names = list(dict.fromkeys(d.speakers[i] for i in keep))
    assert batch.speakers[0, :4].tolist() == [names.index(d.speakers[i]) for i in keep]
    assert c.utterance_ids == [d.utterance_ids[i] for i in keep]
    assert torch.equal(dialogue_rows(c), torch.tensor([d.start + i for i in keep]))
    # The loss denominators count the kept utterances only.
    counts = batch_counts(fs, [c], "tav")
    assert counts.labelled == 3
    for m in "tav":
        assert counts.valid[m] == int(fs.present[m][dialogue_rows(c)].sum())


def test_p0_batches_equal_the_uncropped_batches_bit_for_bit():
    fs = small()
    group = fs.split("train")[:5]
    a = collate(fs, group)
    b = collate(fs, crop_context(group, 0.0, 0.5, 10, torch.Generator().manual_seed(0)))
    for m in fs.features:
        assert torch.equal(a.features[m], b.features[m])
        assert torch.equal(a.modality_mask[m], b.modality_mask[m])
    assert torch.equal(a.labels, b.labels) and torch.equal(a.utterance_mask, b.utterance_mask)


def test_micro_batches_of_crops_give_the_whole_batch_gradient():
    fs = small()
    group = crop_context(fs.split("train")[:10], 1.0, 0.5, 10, torch.Generator().manual_seed(1))
    assert any(isinstance(c, SubDialogue) for c in group)
    mc, _ = configs_for("tiny", "tav", {"dropout": 0.0})
    torch.manual_seed(0)
    model = Ada2I(replace(mc, input_dims=fs.dims, n_classes=len(LABELS))).train()
    whole = batch_counts(fs, group, model.modalities)

    def grads(budget):
        model.zero_grad(set_to_none=True)
        for part in micro_batches(group, budget):
            b = collate(fs, part)
            out = model({m: b.features[m] for m in "tav"}, b.utterance_mask, b.modality_mask)
            ada2i_loss(out, b.labels, whole).total.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert len(micro_batches(group, 12)) > 2
    g_whole, g_micro = grads(0), grads(12)
    for name in g_whole:
        torch.testing.assert_close(g_micro[name], g_whole[name], atol=1e-6, rtol=1e-4)


def run(fs, out, **overrides):
    mc, tc = configs_for("tiny", "tav", {"progress": False, "epochs": 4, **overrides})
    result = train(fs, mc, tc, out)
    return result, [h["loss"] for h in json.loads(result.history_path.read_text())]


def test_training_with_crops_is_reproducible_and_p0_is_the_plain_run(tmp_path):
    fs = small()
    # Modulated and micro-batched from epoch 2 on (tiny preset), so crops meet both.
    aug = {"context_augment_p": 0.5, "micro_batch_utterances": 40}
    a, loss_a = run(fs, tmp_path / "a", **aug)
    _, loss_b = run(fs, tmp_path / "b", **aug)
    assert loss_a == loss_b  # same seed, same crops, same run
    assert a.metrics["weighted_f1"] > 0.5  # chance ~0.25: it still learns the planted signal
    assert a.metrics["n"] == sum(d.length for d in fs.split("test"))  # test stays whole
    hist = json.loads(a.history_path.read_text())
    assert all(h["modulated"] for h in hist[1:]) and "k" in hist[-1]
    _, plain = run(fs, tmp_path / "plain", micro_batch_utterances=40)
    _, p0 = run(fs, tmp_path / "p0", micro_batch_utterances=40, context_augment_p=0.0,
                context_subset_share=0.9, context_subset_max=2)  # fmt: skip
    assert p0 == plain  # off means off: the other two settings change nothing
    assert loss_a != plain


@pytest.mark.parametrize(
    "key, bad",
    [
        ("context_augment_p", 1.5),
        ("context_augment_p", -0.1),
        ("context_subset_share", 2),
        ("context_subset_max", 0),
    ],  # fmt: skip
)
def test_settings_are_range_checked(key, bad):
    with pytest.raises(SettingsError, match=key):
        coerce_settings({key: bad})
    assert coerce_settings({"context_augment_p": "0.5"}) == {"context_augment_p": 0.5}
