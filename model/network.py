"""The parcelscan CNN: a torchvision backbone, a clear/suspect head and a light powder-mask head.

Why this shape:

* **Backbone** — torchvision's MobileNetV3-small (default), MobileNetV3-large, EfficientNet-B0 or
  ResNet-18, always built with ``weights=None``: the model is trained from scratch on physics-simulated
  scans (ImageNet statistics do not describe log-attenuation channels, and stations have no internet).
  The first convolution is rebuilt for the input kind's channel count (dual-energy or pseudo-colour).
* **Classification head** — global *average and max* pooling of the last feature map, concatenated.
  A concealed powder can cover a few percent of a tile; average pooling alone dilutes that evidence,
  max pooling keeps the strongest local response.
* **Mask head** — an FPN-lite decoder on two feature levels (stride 8 and stride 32): 1×1 laterals to
  ``decoder_channels``, the coarse level upsampled and added, one depthwise-separable 3×3 block, a 1×1
  to one logit. The heatmap is at stride :data:`HEATMAP_STRIDE` (8): 40×40 cells for a 320×320 tile,
  16 mm per cell at the 2 mm model pitch — enough to show an inspector where to look, and cheap.

* **Score head** (``NetworkConfig.score_head``) — where the tile's clear/suspect logits come from:
  ``classifier`` (the head above; every model shipped before the 2 mm recipe) or ``heatmap_topk``: the
  suspect margin is an affine function of the **mean of the top ``score_topk`` heatmap logits** of the
  tile (no classifier head is built). Why: the verdict is then a pooled function of the localisation, so
  heatmap and verdict agree (a flagged scan always has hot cells, a hot cell always raises the score), and
  a 10 g pouch that covers two or three 16 mm cells moves the score as much as a sack does, where a
  global-pooled classifier dilutes it. The mask loss trains every cell; the class loss on the pooled score
  teaches the few hottest cells of a clear tile to stay cold (mined look-alikes). Logits are
  ``(0, a·topk_mean + b)``, so ``logit_suspect − logit_clear`` is the pooled margin and the exported
  ``suspect_probability`` (a softmax of the logits) is ``sigmoid(margin / T)``: the station's contract,
  its output names and shapes are unchanged. ``hybrid``: both — the suspect margin is the classifier's margin
  plus the affine top-k heatmap term, trained jointly by the class loss. Why: the heatmap score finds small
  pouches and dilute mixtures the global-pooled classifier dilutes away, but misses a cavity inside a casting
  (a small region under a large dark one), which the classifier's pooled features see (docs/model-history.md,
  the 2 mm arms); the sum lets either kind of evidence raise the score. A hybrid verdict can rise without a
  hot cell, so on it the heatmap explains but does not bound the score.

* **Test-time flips** (``NetworkConfig.test_time_flips``: 1, 2 or 4) — in eval mode the tile is also scored
  mirrored left-right (2) and up-down and both (4), in one batch: the logits are the mean over the views, the
  heatmap logits the mean of each view's heatmap flipped back. Why: a parcel mirrored on the belt is the same
  parcel (training flips tiles for free), and the mean of the views lowers the score's variance where the
  evidence is faint. It costs the network's compute times the views (~0.9 ms a tile on one core for the 4 mm
  default) and changes no weight, so it is a setting of the stored network, applied by everything that runs it in
  eval mode — validation, ``evaluate`` on a checkpoint, the exported graph, hence the station. Training steps
  (train mode) see one view. Measured on the shipped default's weights: README, "Session 16 measurements".

``forward(x) -> (logits (N, 2), heatmap_logits (N, 1, ceil(H/8), ceil(W/8)))``.

**Shape configuration**: everything that decides the shapes of the weights (arch, input channels,
classes, decoder width, hidden units) — and how the stored network scores a tile (score head, test-time
flips) — is a :class:`NetworkConfig`, stored in every checkpoint
(``network``) and read back to build the model, so changing a default here cannot silently break an old
checkpoint. Checkpoints written before the configuration was stored lack some keys: those take the values
the network had then (:data:`LEGACY_SHAPE`), never the current defaults.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet18")
DEFAULT_ARCH = "mobilenet_v3_small"
HEATMAP_STRIDE = 8
DECODER_CHANNELS = 32  # default width of the mask decoder for new models
HIDDEN_UNITS = 256  # default hidden units of the classification head for new models
# The shape of every checkpoint written before ``network`` was stored in it: frozen, whatever the defaults
# above become (a missing key in a stored configuration takes these values).
LEGACY_SHAPE = {"decoder_channels": 32, "hidden_units": 256, "num_classes": 2, "score_head": "classifier",
                "score_topk": 4, "test_time_flips": 1}
SCORE_HEADS = ("classifier", "heatmap_topk", "hybrid")
SCORE_TOPK = 4  # default cells in the top-k pool: 2×2 cells of 16 mm at 2 mm/px, about a 10 g pouch
HEATMAP_PRIOR = 0.01  # initial powder probability per cell: a fresh model does not paint the whole scan
TEST_TIME_FLIPS = (1, 2, 4)  # views scored in eval mode: identity; + left-right; + up-down and both
FLIP_DIMS = ((), (3,), (2,), (2, 3))  # the views' flipped axes of an (N, C, H, W) tile batch, in that order
BN_MOMENTUM = 0.1  # PyTorch's default, for every arch (torchvision's MobileNetV3 uses 0.01; see ParcelNet)


@dataclass(frozen=True)
class NetworkConfig:
    """Everything that decides the weights' shapes: build a model from it, store it with the weights."""

    arch: str = DEFAULT_ARCH
    in_channels: int = 3
    num_classes: int = 2
    decoder_channels: int = DECODER_CHANNELS
    hidden_units: int = HIDDEN_UNITS
    score_head: str = "classifier"  # see the module docstring: classifier | heatmap_topk | hybrid
    score_topk: int = SCORE_TOPK  # heatmap cells averaged by heatmap_topk and hybrid (unused by classifier)
    test_time_flips: int = 1  # views averaged in eval mode (module docstring); changes no weight

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """A stored configuration; ``arch`` and ``in_channels`` are required, any other missing key takes
        its :data:`LEGACY_SHAPE` value (the network's shape before configurations were stored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown network setting(s) {', '.join(unknown)}")
        missing = [key for key in ("arch", "in_channels") if key not in data]
        if missing:
            raise ValueError(f"network configuration lacks {', '.join(missing)}")
        values = {**LEGACY_SHAPE, **data}
        return cls(arch=str(values["arch"]), in_channels=int(values["in_channels"]),
                   num_classes=int(values["num_classes"]), decoder_channels=int(values["decoder_channels"]),
                   hidden_units=int(values["hidden_units"]), score_head=str(values["score_head"]),
                   score_topk=int(values["score_topk"]), test_time_flips=int(values["test_time_flips"]))


def _backbone_blocks(arch: str) -> list[nn.Module]:
    """The backbone as a flat list of blocks, each keeping or reducing the resolution (no classifier)."""
    from torchvision import models

    if arch == "mobilenet_v3_small":
        return list(models.mobilenet_v3_small(weights=None).features)
    if arch == "mobilenet_v3_large":
        return list(models.mobilenet_v3_large(weights=None).features)
    if arch == "efficientnet_b0":
        return list(models.efficientnet_b0(weights=None).features)
    if arch == "resnet18":
        net = models.resnet18(weights=None)
        return [nn.Sequential(net.conv1, net.bn1, net.relu), net.maxpool, net.layer1, net.layer2, net.layer3,
                net.layer4]
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def _replace_stem(blocks: list[nn.Module], in_channels: int) -> None:
    """Rebuild the first convolution for ``in_channels`` inputs (same kernel, stride, padding, width)."""
    for parent in blocks[0].modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.groups != 1:
                    raise ValueError("the first backbone convolution is expected to be a dense convolution")
                stem = nn.Conv2d(in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                                 child.dilation, bias=child.bias is not None)
                nn.init.kaiming_normal_(stem.weight, mode="fan_out")
                if stem.bias is not None:
                    nn.init.zeros_(stem.bias)
                setattr(parent, child_name, stem)
                return
    raise ValueError("no convolution found in the first backbone block")


def _level_indices(blocks: list[nn.Module], in_channels: int) -> tuple[int, int, int, int]:
    """(index of the last stride-8 block, its channels, index of the last stride-32 block, its channels).

    Found with one dummy forward pass, so the same code serves every arch."""
    size = 64
    x = torch.zeros(1, in_channels, size, size)
    last8 = last32 = -1
    ch8 = ch32 = 0
    with torch.no_grad():
        for index, block in enumerate(blocks):
            block.eval()
            x = block(x)
            stride = size // x.shape[-1]
            if stride == 8:
                last8, ch8 = index, x.shape[1]
            if stride == 32:
                last32, ch32 = index, x.shape[1]
    if last8 < 0 or last32 < 0:
        raise ValueError("backbone does not reach strides 8 and 32")
    return last8, ch8, last32, ch32


class ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class MaskDecoder(nn.Module):
    """FPN-lite: two laterals, top-down add, one depthwise-separable block, a 1×1 logit."""

    def __init__(self, ch8: int, ch32: int, width: int) -> None:
        super().__init__()
        self.lateral8 = ConvBNAct(ch8, width)
        self.lateral32 = ConvBNAct(ch32, width)
        self.refine = nn.Sequential(ConvBNAct(width, width, 3, groups=width), ConvBNAct(width, width))
        self.logit = nn.Conv2d(width, 1, 1)
        nn.init.normal_(self.logit.weight, std=0.01)
        nn.init.constant_(self.logit.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, f8: torch.Tensor, f32: torch.Tensor) -> torch.Tensor:
        top = F.interpolate(self.lateral32(f32), size=f8.shape[-2:], mode="bilinear", align_corners=False)
        return self.logit(self.refine(self.lateral8(f8) + top))


class ParcelNet(nn.Module):
    """Backbone split at stride 8 and stride 32 → (class logits, heatmap logits at stride 8)."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        config = config or NetworkConfig()
        arch, in_channels, num_classes = config.arch, config.in_channels, config.num_classes
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        if in_channels < 1 or num_classes < 2 or config.decoder_channels < 1 or config.hidden_units < 1:
            raise ValueError("in_channels, decoder_channels and hidden_units must be >= 1, num_classes >= 2")
        if config.score_head not in SCORE_HEADS:
            raise ValueError(f"score_head must be one of {', '.join(SCORE_HEADS)}, got {config.score_head!r}")
        if config.score_head != "classifier" and (num_classes != 2 or not 1 <= config.score_topk <= 16):
            # 16 cells: the smallest tile (32×32 px) has 4×4 heatmap cells, so k is always available
            raise ValueError(f"{config.score_head} needs num_classes 2 and score_topk within 1-16")
        if config.test_time_flips not in TEST_TIME_FLIPS:
            raise ValueError(f"test_time_flips must be one of {TEST_TIME_FLIPS}, got {config.test_time_flips}")
        self.config = config
        self.arch, self.in_channels, self.num_classes = arch, in_channels, num_classes
        blocks = _backbone_blocks(arch)
        _replace_stem(blocks, in_channels)
        i8, ch8, i32, ch32 = _level_indices(blocks, in_channels)
        self.to_stride8 = nn.Sequential(*blocks[: i8 + 1])
        self.to_stride32 = nn.Sequential(*blocks[i8 + 1: i32 + 1])
        self.decoder = MaskDecoder(ch8, ch32, config.decoder_channels)
        # torchvision's MobileNetV3 / EfficientNet BatchNorm momentum of 0.01 (the TF reference) makes the
        # running statistics lag ~100s of steps behind the weights: the eval-mode model (validation, EMA,
        # export) is then far from the trained one after short runs — fine-tuning on a few new seizures is
        # exactly such a run. 0.1 tracks within ~20 steps and is what ResNet uses anyway.
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        self.score_head = config.score_head
        self.score_topk = config.score_topk
        if config.score_head in ("classifier", "hybrid"):
            hidden = config.hidden_units
            self.classifier = nn.Sequential(nn.Linear(2 * ch32, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(hidden, num_classes))
            for layer in self.classifier:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, 0, 0.01)
                    nn.init.zeros_(layer.bias)
        if config.score_head in ("heatmap_topk", "hybrid"):
            # margin = scale · topk_mean + bias; at initialisation the margin is the pooled logit itself
            # (scale 1, bias 0), i.e. the prior's −4.6: a fresh model calls every tile clear, like the heatmap
            self.score_scale = nn.Parameter(torch.ones(()))
            self.score_bias = nn.Parameter(torch.zeros(()))
        self.train()

    @property
    def test_time_flips(self) -> int:
        """Views a tile is scored in by the eval-mode network: the stored configuration's, never a copy of it."""
        return self.config.test_time_flips

    def pooled_margin(self, heat: torch.Tensor) -> torch.Tensor:
        """(N, 1, h, w) heatmap logits → (N,) suspect margin: affine map of the mean of the top-k cells."""
        top = torch.topk(heat.flatten(1), self.score_topk, dim=1).values
        return self.score_scale * top.mean(dim=1) + self.score_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training or self.test_time_flips == 1:
            return self.score_views(x)
        views = FLIP_DIMS[: self.test_time_flips]
        logits, heat = self.score_views(torch.cat([x.flip(dims) if dims else x for dims in views]))
        # view-major batch → (views, N, …): reshape, not split, so the exported graph keeps a dynamic batch axis
        logits = logits.reshape(len(views), -1, logits.shape[-1]).mean(dim=0)
        heat = heat.reshape(len(views), -1, *heat.shape[1:]).unbind(0)
        return logits, torch.stack([h.flip(dims) if dims else h for h, dims in zip(heat, views, strict=True)]).mean(0)

    def score_views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One view per tile: (logits, heatmap logits) of the tiles as they are."""
        f8 = self.to_stride8(x)
        f32 = self.to_stride32(f8)
        heat = self.decoder(f8, f32)
        if self.score_head == "heatmap_topk":
            margin = self.pooled_margin(heat)
            return torch.stack([torch.zeros_like(margin), margin], dim=1), heat
        pooled = torch.cat([f32.mean(dim=(2, 3)), f32.amax(dim=(2, 3))], dim=1)
        logits = self.classifier(pooled)
        if self.score_head == "hybrid":
            margin = logits[:, 1] - logits[:, 0] + self.pooled_margin(heat)
            return torch.stack([torch.zeros_like(margin), margin], dim=1), heat
        return logits, heat


def build_model(arch: str = DEFAULT_ARCH, in_channels: int = 3, num_classes: int = 2,
                decoder_channels: int | None = None, hidden_units: int | None = None,
                score_head: str = "classifier", score_topk: int = SCORE_TOPK, test_time_flips: int = 1) -> ParcelNet:
    """The contract's constructor: randomly initialised (never downloads weights). Unset widths take the
    module defaults *now* (:data:`DECODER_CHANNELS`, :data:`HIDDEN_UNITS`); a stored model is built with
    :func:`build_from_config` instead."""
    return ParcelNet(NetworkConfig(arch, in_channels, num_classes,
                                   DECODER_CHANNELS if decoder_channels is None else decoder_channels,
                                   HIDDEN_UNITS if hidden_units is None else hidden_units, score_head, score_topk,
                                   test_time_flips))


def build_from_config(config: NetworkConfig) -> ParcelNet:
    """A randomly initialised model of exactly the stored shape (load the stored weights into it)."""
    return ParcelNet(config)


def set_test_time_flips(model: ParcelNet, flips: int) -> ParcelNet:
    """``model`` scoring ``flips`` views in eval mode from now on, its stored configuration saying so (a setting,
    not a shape: no weight changes). Returns the model."""
    if flips not in TEST_TIME_FLIPS:
        raise ValueError(f"test_time_flips must be one of {TEST_TIME_FLIPS}, got {flips}")
    model.config = replace(model.config, test_time_flips=flips)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
