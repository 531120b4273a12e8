"""Ada2I network: shapes for every modality subset, masking, AFW/AMW properties, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from model.ada2i import Ada2I, AFWLayer
from model.config import (
    AUTHORS_ENCODERS,
    CONCAT_BASELINE,
    PRESETS,
    SUBSETS,
    Ada2IConfig,
    parse_modalities,
    preset,
)
from model.objective import (
    IGNORE,
    ada2i_loss,
    add_update_noise,
    coefficients,
    discrepancy_ratios,
    set_update_scales,
    unimodal_scores,
)
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint

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
    # L_feature per modality: the L1 gap between two independently initialised maps (Att_m and
    # Phi_m), never 0 before training; their sum is the total.
    assert sorted(out.feature_losses) == sorted(subset)
    assert all(loss.ndim == 0 and loss > 0 for loss in out.feature_losses.values())
    assert out.feature_loss.ndim == 0
    torch.testing.assert_close(out.feature_loss, sum(out.feature_losses.values()))
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


def test_a_modality_absent_from_a_whole_dialogue_is_skipped_in_the_contraction():
    """No face in any utterance of dialogue 0: its A^(v) would be the zero matrix and make Att_t
    the linear's bias whatever the text says; the contraction with v is skipped (identity)."""
    torch.manual_seed(0)
    cfg = tiny(dropout=0.0)
    layer = AFWLayer(cfg).eval()
    z = {m: torch.randn(2, 5, cfg.hidden) for m in "tav"}
    valid = {m: torch.ones(2, 5, dtype=torch.bool) for m in "tav"}
    valid["v"][0] = False  # dialogue 0 has no visual at all; dialogue 1 has it everywhere
    out, _ = layer(z, valid)
    theta_t, theta_a = layer._theta("t", z["t"]), layer._theta("a", z["a"])
    pooled_a = theta_a[0].mean(0)  # [R, R]
    expected = layer.att["t"]((theta_t[0] @ pooled_a).flatten(-2))  # [T, H], no v contraction
    torch.testing.assert_close(out["t"][0], expected * z["t"][0] + cfg.beta * z["t"][0])
    gain = out["t"][0] / z["t"][0]  # [T, H]: Att_t + beta, per utterance
    assert float((gain - gain[0]).abs().max()) > 1e-6  # not the bias alone: it follows the text
    # dialogue 1 (visual present) is untouched by dialogue 0's absence
    alone, _ = layer({m: x[1:] for m, x in z.items()}, {m: v[1:] for m, v in valid.items()})
    torch.testing.assert_close(out["t"][1], alone["t"][0])


@pytest.mark.parametrize("axis", ["last", "first", "joint", "none"])
def test_theta_softmax_axes(axis):
    cfg = tiny(theta_softmax=axis)
    layer = AFWLayer(cfg).eval()
    theta = layer._theta("t", torch.randn(2, 5, cfg.hidden))  # [B, T, R, R]
    r = cfg.rank
    if axis == "last":
        torch.testing.assert_close(theta.sum(-1), torch.ones(2, 5, r))
    elif axis == "first":
        torch.testing.assert_close(theta.sum(-2), torch.ones(2, 5, r))
    elif axis == "joint":  # a distribution over all R*R entries, times R
        torch.testing.assert_close(theta.sum((-2, -1)), torch.full((2, 5), float(r)))
    else:
        assert (theta < 0).any()  # raw scores


def test_theta_softmax_is_an_axis_name():
    with pytest.raises(ValueError, match="theta_softmax"):
        tiny(theta_softmax=True)  # the boolean of an unreleased version: refused, not mapped
    with pytest.raises(ValueError, match="theta_softmax"):
        tiny(theta_softmax="rows")


def test_theta_rows_are_distributions_and_beta_residual():
    cfg = tiny(beta=0.25, dropout=0.0, theta_softmax="last")
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


def test_update_noise_has_the_gradient_spread_times_lr():
    """Eq. 19: theta <- theta + lr * h, h ~ N(0, std(grad)^2) per tensor, after the step."""
    g = torch.nn.Parameter(torch.zeros(20_000))
    g.grad = 3.0 * torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    rms = add_update_noise({"t": [g]}, lr=0.01, generator=torch.Generator().manual_seed(1))
    assert float(g.detach().std()) == pytest.approx(0.01 * float(g.grad.std()), rel=0.05)
    assert rms["t"] == pytest.approx(float(g.detach().pow(2).mean().sqrt()), rel=1e-5)
    assert float(g.grad.std()) == pytest.approx(3.0, rel=0.05)  # the gradient itself untouched


def test_update_scales_name_the_encoder_groups():
    model = Ada2I(tiny())
    groups = model.parameter_groups()
    assert [g["name"] for g in groups] == ["encoder.t", "encoder.a", "encoder.v", "shared"]
    assert [id(p) for g in groups for p in g["params"]] == [id(p) for p in model.parameters()]
    set_update_scales(groups, {"t": 0.25, "v": 1.0})
    assert [g["update_scale"] for g in groups] == [0.25, 1.0, 1.0, 1.0]


def test_checkpoint_round_trip_is_exact_and_pickle_free(tmp_path):
    torch.manual_seed(0)
    model = Ada2I(tiny("ta")).eval()
    save_checkpoint(
        tmp_path / "ck", model, label_names=list("wxyz"), feature_spec={"t": {"dim": 12}}
    )
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "README.md",  # the model card
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
    # A consistent checkpoint.json whose weights hash matches other-shaped weights: shapes catch it
    import json

    from pipeline.files import sha256_file
    from pipeline.training.checkpoint import meta_digest

    path = tmp_path / "ck" / "checkpoint.json"
    meta = json.loads(path.read_text())
    meta["weights_sha256"] = sha256_file(tmp_path / "ck" / "model.safetensors")
    meta["content_sha256"] = meta_digest(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="model.safetensors: weights do not match"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("bad", ["", "tx", "tat", "text", None])
def test_the_modalities_parser_refuses_anything_but_distinct_tav_letters(bad):
    with pytest.raises(ValueError, match="expected a non-empty subset of the letters"):
        parse_modalities(bad)


def test_the_modalities_parser_gives_canonical_order():
    assert parse_modalities(" VAT") == "tav" and parse_modalities("va") == "av"


def test_config_validation_and_paper_presets():
    with pytest.raises(ValueError, match="modalities='tx': expected a non-empty subset"):
        tiny("tx")
    with pytest.raises(ValueError, match="beta"):
        tiny(beta=2.0)
    assert tiny("vt").modalities == "tv"  # canonical order
    for name, values in PRESETS.items():  # each a valid config that round-trips
        cfg = preset(name)
        assert {k: getattr(cfg, k) for k in values} == values
        assert Ada2IConfig.from_dict(cfg.to_dict()) == cfg
    assert preset("meld", hidden=64).hidden == 64  # an override wins over the table
    with pytest.raises(ValueError, match="unknown model preset 'imdb'; choose from"):
        preset("imdb")


def test_authors_sized_encoders_match_their_parameter_count():
    n = sum(p.numel() for p in Ada2I(preset("iemocap", **AUTHORS_ENCODERS)).parameters())
    assert 35.0e6 < n < 36.5e6  # official-code-notes.md: 35.7 M
    ours = sum(p.numel() for p in Ada2I(preset("iemocap")).parameters())
    assert ours < n / 5
