"""The network: every arch builds offline, adapts its stem, and returns (logits, heatmap at stride 8);
the loss follows the mask rules; checkpoints round-trip and refuse foreign files."""

from __future__ import annotations

import itertools

import pytest
import torch

from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from parcelscan.model.network import ARCHS, HEATMAP_STRIDE, build_model, count_parameters
from parcelscan.training.train import compute_losses, lr_factor, mask_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("in_channels", [3, 2])
def test_shapes_every_arch(arch, in_channels):
    torch.manual_seed(0)
    model = build_model(arch, in_channels).eval()
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == in_channels
    with torch.no_grad():
        logits, heat = model(torch.randn(2, in_channels, 96, 64))
    assert logits.shape == (2, 2)
    assert heat.shape == (2, 1, 96 // HEATMAP_STRIDE, 64 // HEATMAP_STRIDE)
    assert torch.isfinite(logits).all() and torch.isfinite(heat).all()


def test_default_model_is_small_and_heatmap_starts_near_prior():
    model = build_model().eval()
    assert model.arch == "mobilenet_v3_small"
    assert count_parameters(model) < 2_000_000  # ~5 MB float32: well under the 10 MB ONNX budget
    with torch.no_grad():
        _, heat = model(torch.randn(1, 3, 320, 320))
    assert heat.shape == (1, 1, 40, 40)
    # the mask head's bias starts at the 1 % prior: a fresh model does not paint the whole scan
    assert torch.sigmoid(heat).mean().item() == pytest.approx(0.01, abs=0.01)


def test_unknown_arch_and_bad_channels():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg16", 3)
    with pytest.raises(ValueError):
        build_model("mobilenet_v3_small", 0)


def test_backward_reaches_both_heads():
    model = build_model("mobilenet_v3_small", 3)
    logits, heat = model(torch.randn(4, 3, 64, 64))
    masks = torch.zeros(4, 64, 64)
    masks[1, 10:30, 20:40] = 1.0
    losses = compute_losses(logits, heat, torch.tensor([0, 1, 0, 1]), masks, torch.tensor([1, 1, 1, 0]).bool())
    losses["loss"].backward()
    assert model.decoder.logit.weight.grad.abs().sum() > 0
    assert model.classifier[-1].weight.grad.abs().sum() > 0
    assert model.to_stride8[0][0].weight.grad.abs().sum() > 0


def test_mask_loss_rules():
    torch.manual_seed(0)
    logits = torch.zeros(2, 2)
    heat = torch.full((2, 1, 8, 8), -4.0)
    labels = torch.tensor([0, 1])
    masks = torch.zeros(2, 64, 64)
    masks[1, :8, :8] = 0.25  # one heatmap cell, partly covered
    # no sample has a mask: no mask loss at all (a suspect without a mask, e.g. a station seizure)
    none = compute_losses(logits, heat, labels, masks, torch.tensor([False, False]))
    assert none["mask_bce"] == 0 and none["mask_dice"] == 0
    # only the clear sample's known-empty mask: BCE, no dice (dice is undefined on an empty target)
    clear_only = compute_losses(logits, heat, labels, masks, torch.tensor([True, False]))
    expected = torch.nn.functional.softplus(torch.tensor(-4.0)).item()
    assert clear_only["mask_bce"].item() == pytest.approx(expected, rel=1e-5)
    assert clear_only["mask_dice"] == 0
    # the suspect's mask: dice counted; the target is the max coverage in each stride-8 cell
    both = compute_losses(logits, heat, labels, masks, torch.tensor([True, True]))
    assert both["mask_dice"] > 0
    target = mask_targets(masks, (8, 8))
    assert target.shape == (2, 1, 8, 8) and target[1, 0, 0, 0] == 0.25 and target.sum() == 0.25
    assert both["loss"] == pytest.approx(both["cls_loss"] + both["mask_bce"] + both["mask_dice"])


def test_lr_schedule_warmup_then_cosine():
    values = [lr_factor(step, 100, 10, 0.02) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))
    assert lr_factor(100, 100, 10, 0.02) == pytest.approx(0.02)


def _checkpoint(model, **extra):
    return {"arch": model.arch, "in_channels": model.in_channels, "model": model.state_dict(), "ema": None,
            "preprocessing": {"input_kind": "dual_energy"}, "threshold": 0.5, "temperature": 1.5, **extra}


def test_checkpoint_round_trip_prefers_ema(tmp_path):
    torch.manual_seed(1)
    model = build_model("mobilenet_v3_small", 3).eval()
    ema = build_model("mobilenet_v3_small", 3).eval()
    path = save_checkpoint(tmp_path / "w" / "last.pt", _checkpoint(model, ema=ema.state_dict(), epoch=3))
    x = torch.randn(1, 3, 64, 64)
    loaded, info = load_checkpoint(path)
    assert info["weights"] == "ema" and info["epoch"] == 3 and info["classes"] == ["clear", "suspect"]
    assert "model" not in info and "optimizer" not in info
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], ema(x)[0])
        raw, raw_info = load_checkpoint(path, use_ema=False)
        assert raw_info["weights"] == "model" and torch.equal(raw(x)[0], model(x)[0])
    assert not loaded.training


def test_checkpoint_refuses_foreign_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ParcelscanError, match="not a readable parcelscan checkpoint"):
        read_checkpoint(junk)
    plain = tmp_path / "plain.pt"
    torch.save({"state": 1}, plain)
    with pytest.raises(ParcelscanError, match="not a parcelscan checkpoint"):
        read_checkpoint(plain)
    with pytest.raises(ParcelscanError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")
    model = build_model("mobilenet_v3_small", 3)
    wrong = save_checkpoint(tmp_path / "wrong.pt", {**_checkpoint(model), "arch": "resnet18"})
    with pytest.raises(ParcelscanError, match="do not match"):
        load_checkpoint(wrong)


def test_checkpoint_stores_the_network_shape_and_old_checkpoints_keep_theirs(tmp_path, monkeypatch):
    """Issue 12: the decoder width and hidden units were module constants no checkpoint recorded. Now the
    checkpoint stores the shape and the model is built from it; a checkpoint written before (no ``network``
    key) is read with the shape it had then, even after the network's defaults change."""
    from parcelscan.model import network
    from parcelscan.model.checkpoint import network_config, network_entry

    torch.manual_seed(2)
    old_model = build_model("mobilenet_v3_small", 3).eval()
    old = _checkpoint(old_model)  # written the old way: arch and in_channels, no network configuration
    assert "network" not in old
    old_path = save_checkpoint(tmp_path / "old.pt", old)
    assert "network" not in read_checkpoint(old_path)
    # a newcomer changes the defaults for new models
    monkeypatch.setattr(network, "DECODER_CHANNELS", 48)
    monkeypatch.setattr(network, "HIDDEN_UNITS", 128)
    new_model = build_model("mobilenet_v3_small", 3).eval()
    assert new_model.decoder.logit.in_channels == 48 and new_model.classifier[0].out_features == 128
    new_path = save_checkpoint(tmp_path / "new.pt", _checkpoint(new_model, network=network_entry(new_model)))
    x = torch.randn(1, 3, 64, 64)
    loaded_old, _ = load_checkpoint(old_path)  # the old checkpoint still loads, with its own shape
    assert loaded_old.decoder.logit.in_channels == network.LEGACY_SHAPE["decoder_channels"] == 32
    assert loaded_old.classifier[0].out_features == network.LEGACY_SHAPE["hidden_units"] == 256
    monkeypatch.undo()  # and the new one loads after the defaults went back: its shape is read, not assumed
    loaded_new, _ = load_checkpoint(new_path)
    assert network_config(read_checkpoint(new_path)).decoder_channels == 48
    with torch.no_grad():
        assert torch.equal(loaded_old(x)[0], old_model(x)[0]) and torch.equal(loaded_new(x)[1], new_model(x)[1])
    # a stored configuration missing a key takes the old constant's value, not today's default
    partial = {**_checkpoint(old_model), "network": {"arch": "mobilenet_v3_small", "in_channels": 3}}
    assert network_config(partial).decoder_channels == 32 and network_config(partial).hidden_units == 256


def test_heatmap_topk_head_scores_the_hottest_cells_and_is_stored(tmp_path):
    """score_head heatmap_topk: the suspect margin is scale · mean(top-k heatmap logits) + bias, so the verdict
    rises with the hottest cells and nothing else; the head is stored with the weights, an old checkpoint
    (no score_head in its network entry) stays a classifier."""
    from parcelscan.model.checkpoint import network_entry

    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", 3, score_head="heatmap_topk", score_topk=4).eval()
    assert not hasattr(model, "classifier")
    with torch.no_grad():
        model.score_scale.fill_(1.7)
        model.score_bias.fill_(0.3)
        logits, heat = model(torch.randn(2, 3, 64, 96))
        expected = 1.7 * heat.flatten(1).topk(4).values.mean(1) + 0.3
        assert torch.allclose(logits[:, 1] - logits[:, 0], expected, atol=1e-6)
        hotter = heat.clone()
        hotter[0, 0, 1, 2] = heat.max() + 10.0  # one cell far above the rest: the pooled margin rises
        assert model.pooled_margin(hotter)[0] > model.pooled_margin(heat)[0] + 1.7 * 10.0 / 4 - 1e-4
        assert torch.equal(model.pooled_margin(hotter)[1], model.pooled_margin(heat)[1])
    path = save_checkpoint(tmp_path / "topk.pt", _checkpoint(model, network=network_entry(model)))
    loaded, info = load_checkpoint(path)
    assert info["network"]["score_head"] == "heatmap_topk" and loaded.score_topk == 4
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])
    old = build_model("mobilenet_v3_small", 3).eval()
    entry = {k: v for k, v in network_entry(old).items() if k not in ("score_head", "score_topk")}
    legacy, _ = load_checkpoint(save_checkpoint(tmp_path / "old.pt", _checkpoint(old, network=entry)))
    assert legacy.score_head == "classifier" and hasattr(legacy, "classifier")
    with pytest.raises(ValueError, match="score_head"):
        build_model(score_head="attention")


def test_hybrid_head_adds_the_classifier_margin_and_the_topk_term(tmp_path):
    """score_head hybrid: margin = classifier margin + scale · mean(top-k heatmap logits) + bias; stored and
    rebuilt from the checkpoint like the other heads."""
    from parcelscan.model.checkpoint import network_entry

    torch.manual_seed(1)
    model = build_model("mobilenet_v3_small", 3, score_head="hybrid", score_topk=4).eval()
    assert hasattr(model, "classifier") and hasattr(model, "score_scale")
    with torch.no_grad():
        model.score_scale.fill_(0.5)
        model.score_bias.fill_(-0.2)
        x = torch.randn(2, 3, 64, 96)
        logits, heat = model(x)
        f32 = model.to_stride32(model.to_stride8(x))
        cls = model.classifier(torch.cat([f32.mean(dim=(2, 3)), f32.amax(dim=(2, 3))], dim=1))
        expected = cls[:, 1] - cls[:, 0] + 0.5 * heat.flatten(1).topk(4).values.mean(1) - 0.2
        assert torch.allclose(logits[:, 1] - logits[:, 0], expected, atol=1e-5)
        assert torch.equal(logits[:, 0], torch.zeros(2))
    path = save_checkpoint(tmp_path / "hybrid.pt", _checkpoint(model, network=network_entry(model)))
    loaded, info = load_checkpoint(path)
    assert info["network"]["score_head"] == "hybrid"
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], model(x)[0])
