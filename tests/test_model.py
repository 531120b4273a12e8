"""Ada2I network: shapes for every modality subset, masking, AFW/AMW properties, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from model.ada2i import Ada2I
from model.afw import AFWLayer
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import AUTHORS_ENCODERS, CONCAT_BASELINE, PRESETS, SUBSETS, Ada2IConfig, preset
from model.losses import IGNORE, ada2i_loss
from model.modulation import coefficients, discrepancy_ratios, modulate_gradients, unimodal_scores

DIMS = {"t": 12, "a": 8, "v": 10}


def tiny(modalities="tav", **kw) -> Ada2IConfig:
    return preset("tiny", input_dims=DIMS, modalities=modalities, **kw)


def batch(b=3, t=7, seed=0, lengths=None):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.randn(b, t, d, generator=g) for m, d in DIMS.items()}
    mask = torch.ones(b, t, dtype=torch.bool)
    for i, n in enumerate(lengths or []):
        mask[i, n:] = False
    return feats, mask


@pytest.mark.parametrize("subset", SUBSETS)
def test_every_subset_builds_and_has_right_shapes(subset):
    torch.manual_seed(0)
    model = Ada2I(tiny(subset)).eval()
    feats, mask = batch(lengths=[7, 4, 2])
    out = model(feats, mask)
    assert out.logits.shape == (3, 7, 4)
    assert out.fused.shape == (3, 7, 4)
    assert sorted(out.unimodal) == sorted(subset)
    assert all(u.shape == (3, 7, 4) for u in out.unimodal.values())
    assert out.feature_loss.ndim == 0 and out.feature_loss >= 0
    assert torch.isfinite(out.logits).all()
    assert model.modalities == "".join(m for m in "tav" if m in subset)


def test_outputs_do_not_depend_on_batch_padding():
    torch.manual_seed(0)
    model = Ada2I(tiny()).eval()
    feats, mask = batch(b=2, t=9, lengths=[9, 5])
    together = model(feats, mask).logits[1, :5]
    alone_feats = {m: x[1:2, :5] for m, x in feats.items()}
    alone = model(alone_feats, torch.ones(1, 5, dtype=torch.bool)).logits[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    # and garbage in the padding changes nothing
    noisy = {m: x.clone() for m, x in feats.items()}
    for x in noisy.values():
        x[1, 5:] = 1e3
    torch.testing.assert_close(model(noisy, mask).logits[1, :5], together, atol=1e-5, rtol=1e-5)


def test_missing_modality_is_masked_not_fused():
    torch.manual_seed(0)
    model = Ada2I(tiny()).eval()
    feats, mask = batch(b=1, t=6)
    present = {m: torch.ones(1, 6, dtype=torch.bool) for m in "tav"}
    present["v"][0, 2] = False  # no face in utterance 2
    base = model(feats, mask, present).logits
    changed = {m: x.clone() for m, x in feats.items()}
    changed["v"][0, 2] = 50.0  # whatever sits in a masked slot must not matter
    torch.testing.assert_close(model(changed, mask, present).logits, base, atol=1e-5, rtol=1e-5)
    # a dialogue with no face at all still works
    present["v"][:] = False
    assert torch.isfinite(model(feats, mask, present).logits).all()


def test_theta_rows_are_distributions_and_beta_residual():
    cfg = tiny(beta=0.25, dropout=0.0)
    layer = AFWLayer(cfg).eval()
    z = {m: torch.randn(2, 5, cfg.hidden) for m in "tav"}
    theta = layer._theta("t", z["t"])
    assert theta.shape == (2, 5, cfg.rank, cfg.rank)
    torch.testing.assert_close(theta.sum(-1), torch.ones(2, 5, cfg.rank))
    for m in "tav":  # with the attention projection zeroed, eq. 7 leaves beta * Z
        torch.nn.init.zeros_(layer.att[m].weight)
        torch.nn.init.zeros_(layer.att[m].bias)
    valid = {m: torch.ones(2, 5, dtype=torch.bool) for m in "tav"}
    out, losses = layer(z, valid)
    for m in "tav":
        torch.testing.assert_close(out[m], 0.25 * z[m])
    assert set(losses) == set("tav") and all(loss > 0 for loss in losses.values())


def test_amw_ignores_feature_scale():
    """Modality-wise L2 normalisation: scaling a modality's features cannot change its vote."""
    torch.manual_seed(0)
    model = Ada2I(tiny(use_afw=False)).eval()
    z = {m: torch.randn(1, 4, model.cfg.hidden) for m in "tav"}
    present = {m: torch.ones(1, 4, dtype=torch.bool) for m in "tav"}
    y1, f1, u1 = model.head(z, present)
    y2, f2, u2 = model.head({**z, "t": z["t"] * 100.0}, present)
    torch.testing.assert_close(f1, f2)
    bias = model.head.bias / 3
    scale = model.cfg.cosine_scale
    for m in "tav":  # scaled cosine scores lie in [-s, s] around b/M
        assert ((u1[m] - bias).abs() <= scale + 1e-5).all()


def test_concat_baseline_unimodal_scores_sum_to_logits():
    torch.manual_seed(0)
    model = Ada2I(tiny(**CONCAT_BASELINE)).eval()
    feats, mask = batch()
    out = model(feats, mask)
    assert out.fused is None and model.afw is None
    torch.testing.assert_close(sum(out.unimodal.values()), out.logits, atol=1e-5, rtol=1e-5)


def test_loss_is_sum_of_terms_and_ignores_padding():
    torch.manual_seed(0)
    model = Ada2I(tiny())
    feats, mask = batch(lengths=[7, 3, 5])
    labels = torch.randint(0, 4, (3, 7))
    labels[~mask] = IGNORE
    out = model(feats, mask)
    losses = ada2i_loss(out, labels)
    torch.testing.assert_close(losses.total, losses.cls + losses.modal + losses.feature)
    labels2 = labels.clone()
    out2 = model(feats, mask)
    assert torch.isfinite(ada2i_loss(out2, labels2).total)
    losses.total.backward()
    assert all(p.grad is not None for p in model.encoders.parameters())


def test_discrepancy_and_coefficients_follow_the_paper():
    rho = discrepancy_ratios({"t": 0.6, "a": 0.3, "v": 0.4})
    assert rho == pytest.approx({"t": 2.0, "a": 1.0, "v": 4 / 3})
    k = coefficients(rho, alpha=0.5)
    assert k["a"] == 1.0  # the weakest modality is never slowed
    assert k["t"] == pytest.approx(1 - math.tanh(1.0))
    assert k["v"] == pytest.approx(1 - math.tanh(0.5 * 4 / 3))
    assert k["t"] < k["v"] < k["a"]


def test_unimodal_scores_are_true_class_probabilities():
    torch.manual_seed(0)
    model = Ada2I(tiny()).eval()
    feats, mask = batch(b=1, t=4)
    out = model(feats, mask)
    labels = torch.tensor([[0, 1, 2, IGNORE]])
    s = unimodal_scores(out, labels)
    expected = out.unimodal["t"][0, :3].softmax(-1)[torch.arange(3), labels[0, :3]].mean()
    assert s["t"] == pytest.approx(float(expected.detach()))


def test_modulation_scales_encoder_gradients_exactly_without_noise():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    q = torch.nn.Parameter(torch.zeros(5))
    p.grad, q.grad = torch.ones(4, 3), torch.full((5,), 2.0)
    modulate_gradients({"t": [p], "a": [q]}, {"t": 0.25, "a": 1.0}, noise=False)
    torch.testing.assert_close(p.grad, torch.full((4, 3), 0.25))
    torch.testing.assert_close(q.grad, torch.full((5,), 2.0))
    g = torch.nn.Parameter(torch.zeros(20_000))
    g.grad = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    before = g.grad.clone()
    modulate_gradients(
        {"t": [g]}, {"t": 0.5}, noise=True, generator=torch.Generator().manual_seed(1)
    )
    added = g.grad - 0.5 * before
    assert float(added.std()) == pytest.approx(float((0.5 * before).std()), rel=0.05)


def test_checkpoint_round_trip_is_exact_and_pickle_free(tmp_path):
    torch.manual_seed(0)
    model = Ada2I(tiny("ta")).eval()
    save_checkpoint(
        tmp_path / "ck", model, label_names=list("wxyz"), feature_spec={"t": {"dim": 12}}
    )
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint.json",
        "model.safetensors",
    ]
    loaded, meta = load_checkpoint(tmp_path / "ck")
    feats, mask = batch()
    torch.testing.assert_close(loaded(feats, mask).logits, model(feats, mask).logits)
    assert meta["label_names"] == list("wxyz")
    assert loaded.cfg == model.cfg


def test_checkpoint_with_wrong_weights_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", Ada2I(tiny("ta")), label_names=list("wxyz"))
    other = Ada2I(tiny("ta", hidden=16))
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()},
        str(tmp_path / "ck" / "model.safetensors"),
    )
    with pytest.raises(ValueError, match="model.safetensors: damaged or replaced"):
        load_checkpoint(tmp_path / "ck")  # the recorded sha256 catches the swap first
    meta = tmp_path / "ck" / "checkpoint.json"  # an older checkpoint has no hash: shapes catch it
    meta.write_text(meta.read_text().replace('"weights_sha256"', '"unused"'))
    with pytest.raises(ValueError, match="model.safetensors: weights do not match"):
        load_checkpoint(tmp_path / "ck")


def test_config_validation_and_paper_presets():
    with pytest.raises(ValueError, match="subset of 'tav'"):
        tiny("tx")
    with pytest.raises(ValueError, match="beta"):
        tiny(beta=2.0)
    assert tiny("vt").modalities == "tv"  # canonical order
    assert PRESETS["iemocap"]["hidden"] == 300 and PRESETS["iemocap"]["rank"] == 11
    assert PRESETS["meld"]["alpha"] == 0.4 and PRESETS["meld"]["beta"] == 0.55
    assert PRESETS["mosei"]["hidden"] == 500 and PRESETS["mosei"]["rank"] == 10
    cfg = preset("iemocap")
    assert Ada2IConfig.from_dict(cfg.to_dict()) == cfg


def test_authors_sized_encoders_match_their_parameter_count():
    n = sum(p.numel() for p in Ada2I(preset("iemocap", **AUTHORS_ENCODERS)).parameters())
    assert 35.0e6 < n < 36.5e6  # official-code-notes.md: 35.7 M
    ours = sum(p.numel() for p in Ada2I(preset("iemocap")).parameters())
    assert ours < n / 5
