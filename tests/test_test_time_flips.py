"""Test-time flips (``NetworkConfig.test_time_flips``): the eval-mode network scores every tile in 1, 2 or 4 mirrored
views and averages them; the setting is stored with the network, survives a checkpoint, and goes into the exported
graph, where onnxruntime must give the mean of the one-view model's logits over the flipped tiles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers

from parcelscan.errors import ParcelscanError
from parcelscan.model.network import FLIP_DIMS, NetworkConfig, build_from_config, build_model, set_test_time_flips

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _views_by_hand(model, x: torch.Tensor, flips: int) -> tuple[torch.Tensor, torch.Tensor]:
    logits, heats = [], []
    for dims in FLIP_DIMS[:flips]:
        one_logits, one_heat = model.score_views(x.flip(dims) if dims else x)
        logits.append(one_logits)
        heats.append(one_heat.flip(dims) if dims else one_heat)
    return torch.stack(logits).mean(0), torch.stack(heats).mean(0)


def _lively_model(flips: int, x: torch.Tensor):
    """A fresh network whose outputs are of order one (BatchNorm statistics measured on ``x``, the class head
    scaled, as tests/inspect_helpers.tiny_checkpoint does): a fresh one's logits are ~1e-10, too small to tell
    a right mean of the views from a wrong one."""
    torch.manual_seed(0)
    model = build_model(in_channels=3, test_time_flips=flips).train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            module.reset_running_stats()
    with torch.no_grad():
        model(x)
        model.classifier[0].weight.mul_(8.0)
        model.classifier[-1].weight.mul_(8.0)
    return model.eval()


@pytest.mark.parametrize("flips", [1, 2, 4])
def test_eval_mode_averages_the_mirrored_views(flips):
    torch.manual_seed(0)
    x = torch.randn(3, 3, 96, 128)  # not square, not a multiple of 32: the views keep their own shapes
    model = _lively_model(flips, x)
    with torch.no_grad():
        logits, heat = model(x)
        want_logits, want_heat = _views_by_hand(model, x, flips)
    assert logits.shape == (3, 2) and heat.shape == want_heat.shape == (3, 1, 12, 16)
    assert logits.abs().max() > 0.1 and heat.abs().max() > 0.1  # numbers that can tell right from wrong
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(heat, want_heat, rtol=0, atol=1e-5)
    if flips > 1:  # the views differ on an asymmetric tile: a mean of one view repeated would fail above
        one_view = model.score_views(x)[0]
        assert not torch.allclose(logits, one_view, atol=1e-4)


def test_training_steps_see_one_view():
    torch.manual_seed(0)
    model = build_model(in_channels=3, test_time_flips=4).train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    logits, heat = model(x)
    torch.manual_seed(1)  # the classifier's dropout draws the same mask
    want_logits, want_heat = model.score_views(x)
    assert heat.shape == (2, 1, 8, 8)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(heat, want_heat)


def test_the_setting_is_stored_and_validated():
    config = NetworkConfig(test_time_flips=4)
    assert NetworkConfig.from_dict(config.to_dict()) == config
    # a configuration stored before the setting existed scores one view, as its model did
    legacy = {k: v for k, v in config.to_dict().items() if k != "test_time_flips"}
    assert NetworkConfig.from_dict(legacy).test_time_flips == 1
    with pytest.raises(ValueError, match="test_time_flips"):
        build_from_config(NetworkConfig(test_time_flips=3))
    model = set_test_time_flips(build_model(in_channels=3), 2)
    assert model.config.test_time_flips == 2 and model.test_time_flips == 2
    with pytest.raises(ValueError, match="test_time_flips"):
        set_test_time_flips(model, 8)


def test_train_config_refuses_other_view_counts():
    from parcelscan.training.config import TrainConfig

    TrainConfig(test_time_flips=4).validate()
    TrainConfig(test_time_flips=0).validate()  # 0: keep the fine-tuned checkpoint's
    with pytest.raises(ParcelscanError, match="test_time_flips"):
        TrainConfig(test_time_flips=3).validate()


def test_export_puts_the_views_in_the_graph(tmp_path):
    import onnxruntime as ort

    from parcelscan.model.export import export_checkpoint
    from parcelscan.model.session import read_metadata

    built = helpers.build_all(tmp_path)
    out = tmp_path / "flips4.onnx"
    lines: list[str] = []
    result = export_checkpoint(built["checkpoint"], out, data=built["scans"], test_time_flips=4, log=lines.append)
    assert result.parity.ok  # torch with its views against onnxruntime, on real scans
    meta = read_metadata(out)
    assert meta.extra["test_time_flips"] == "4" and meta.version == "1+flips4"
    assert any("calibrate this model" in line for line in lines)  # the stored threshold was for one view
    assert "test_time_flips" not in read_metadata(built["model"]).extra  # a one-view export says nothing new

    rng = np.random.default_rng(0)
    tiles = rng.normal(size=(3, 3, helpers.TILE, helpers.TILE)).astype(np.float32)
    flipped = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(built["model"]), providers=["CPUExecutionProvider"])
    _, logits, heat = flipped.run(None, {"scan": tiles})
    want_logits = np.mean([plain.run(["logits"], {"scan": np.ascontiguousarray(np.flip(tiles, dims))})[0]
                           for dims in FLIP_DIMS], axis=0)
    np.testing.assert_allclose(logits, want_logits, rtol=0, atol=1e-4)
    _, logits_5, _ = flipped.run(None, {"scan": np.concatenate([tiles, tiles[:2]])})  # the batch axis stays dynamic
    np.testing.assert_allclose(logits_5[:3], logits, rtol=0, atol=1e-5)
    assert heat.shape[0] == 3
