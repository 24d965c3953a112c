"""A training checkpoint rebuilt from an exported ONNX model: what retraining needs when the ``.pt`` is gone.

The shipped defaults (``model/default/*.onnx``) were trained in an earlier session; their ``.pt`` files
were not kept, and ``parcelscan retrain`` fine-tunes PyTorch weights. Every weight is still in the ONNX
file, but in a changed form: the exporter folded each BatchNorm into the convolution before it
(``W' = W·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``), and ``(γ, β, μ, σ²)`` cannot be recovered from
``(W', b')`` alone (four unknowns per channel, two equations). What this module builds instead:

* **Exactly the exported function in eval mode.** Each folded convolution keeps ``W'``; its BatchNorm gets
  running statistics ``(m, v)`` and ``γ = √(v+ε)``, ``β = b' + m``, so ``BN(W'x) = W'x + b'``
  algebraically, whatever ``(m, v)`` are. Convolutions without a BatchNorm (squeeze-excitation, the mask
  logit) and the two linear layers are copied as they are. Parity with onnxruntime on real scans is
  measured and must be within :data:`PARITY_TOLERANCE`, else nothing is written.
* **A sensible train mode for fine-tuning.** ``(m, v)`` are the per-channel mean and variance of ``W'x``
  measured on real scans (``--data``, default the sample scans in ``examples/``). BatchNorm in train mode
  normalises with batch statistics, so with these values a batch that looks like the measurement data
  passes through nearly unchanged, and ``|γ|``, ``β`` come out close to the original's (BatchNorm is
  invariant to the scale of ``W'``). It is not the original checkpoint: the original's BatchNorm statistics
  came from its training data, these from the measurement scans, and AdamW's weight decay now acts on
  ``W'`` instead of ``W``. The checkpoint records all this under ``source``.

No optimizer, scheduler or EMA state (weights only: ~5 MB). The training configuration stored is the
recipe the model was trained with (``training/recipes/<kind>.yaml``), resolved, so that retraining
inherits its data settings. Usage::

    python -m parcelscan.training.from_onnx model/default/parcelscan-dual.onnx --recipe training/recipes/dual.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parcelscan.datasets.preprocess import PreprocessSpec
from parcelscan.errors import ParcelscanError
from parcelscan.model.checkpoint import network_entry, save_checkpoint
from parcelscan.model.export import load_scan_tiles, wrap_for_export
from parcelscan.model.metadata import OUTPUT_NAMES, ModelMetadata
from parcelscan.model.network import LEGACY_SHAPE, NetworkConfig, ParcelNet, build_from_config
from parcelscan.model.session import open_session, read_metadata, run_in_batches, sha256_file, write_sha256
from parcelscan.training.config import load_config

PARITY_TOLERANCE = 1e-5  # max |Δ| of probabilities and heatmap; logits relative to their magnitude
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "scans"
METHOD = ("weights copied from the ONNX initializers; each BatchNorm that the exporter had folded into its "
          "convolution re-expanded as BN(W'x) = W'x + b' with running statistics measured on real scans")


def _execution_order(model: ParcelNet, in_channels: int) -> tuple[list[str], dict[str, str], list[str]]:
    """(Conv2d module names in call order, conv name → the BatchNorm fed by its output, Linear names in order).

    Found by one forward pass with hooks, so it follows the network's real data flow for every arch."""
    names = {module: name for name, module in model.named_modules()}
    convs: list[str] = []
    linears: list[str] = []
    produced: dict[int, str] = {}
    pairs: dict[str, str] = {}

    def after_conv(module, _inputs, output):
        convs.append(names[module])
        produced[id(output)] = names[module]

    def before_bn(module, inputs):
        source = produced.get(id(inputs[0]))
        if source is not None:
            pairs[source] = names[module]

    def after_linear(module, _inputs, _output):
        linears.append(names[module])

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(before_bn))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(after_linear))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, 64, 64))
    finally:
        for handle in handles:
            handle.remove()
    return convs, pairs, linears


def _graph_weights(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray | None]], list[tuple[np.ndarray, ...]],
                                        float]:
    """(Conv (weight, bias) in graph order, Gemm (weight as out×in, bias) in graph order, inv_temperature)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}

    def tensor(name: str) -> np.ndarray:
        if name not in init:
            raise ParcelscanError(f"{path}: weight {name!r} is not an initializer (exported without constant "
                                  f"folding?)")
        return np.array(init[name], copy=True)  # writable: torch copies from it

    convs, gemms = [], []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            convs.append((tensor(node.input[1]), tensor(node.input[2]) if len(node.input) > 2 else None))
        elif node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                raise ParcelscanError(f"{path}: unexpected Gemm attributes {attrs}")
            weight = tensor(node.input[1])
            gemms.append((weight if attrs.get("transB", 0) else weight.T, tensor(node.input[2])))
        elif node.op_type == "BatchNormalization":
            raise ParcelscanError(f"{path}: the graph keeps BatchNormalization nodes; this reader expects them "
                                  f"folded (PyTorch's TorchScript exporter, as `parcelscan export` uses)")
    inv_temperature = float(tensor("inv_temperature")) if "inv_temperature" in init else float("nan")
    return convs, gemms, inv_temperature


def _assign(model: ParcelNet, path: Path) -> dict[str, str]:
    """Copy the graph's weights into ``model`` (BatchNorms as identity plus the folded bias); returns the
    conv → BatchNorm pairs. Every shape is checked: a mismatch means another network shape."""
    conv_names, pairs, linear_names = _execution_order(model, model.in_channels)
    convs, gemms, _ = _graph_weights(path)
    if len(convs) != len(conv_names) or len(gemms) != len(linear_names):
        raise ParcelscanError(f"{path}: {len(convs)} convolutions and {len(gemms)} linear layers, the "
                              f"{model.arch} network has {len(conv_names)} and {len(linear_names)}")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, (weight, bias) in zip(conv_names, convs, strict=True):
            conv = modules[name]
            if tuple(conv.weight.shape) != weight.shape:
                raise ParcelscanError(f"{path}: convolution {name} has shape {weight.shape} in the file, "
                                      f"{tuple(conv.weight.shape)} in the network")
            conv.weight.copy_(torch.from_numpy(weight))
            if name in pairs:
                bn = modules[pairs[name]]
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)  # √(var + ε) = 1: the BatchNorm passes W'x through
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(bias) if bias is not None else torch.zeros_like(bn.bias))
                bn.num_batches_tracked.zero_()
            elif conv.bias is not None and bias is not None:
                conv.bias.copy_(torch.from_numpy(bias))
            elif bias is not None and np.any(bias):
                raise ParcelscanError(f"{path}: convolution {name} has a bias in the file but none in the network")
        for name, (weight, bias) in zip(linear_names, gemms, strict=True):
            linear = modules[name]
            if tuple(linear.weight.shape) != weight.shape:
                raise ParcelscanError(f"{path}: linear layer {name} has shape {weight.shape} in the file, "
                                      f"{tuple(linear.weight.shape)} in the network")
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            linear.bias.copy_(torch.from_numpy(bias))
    return pairs


def _set_statistics(model: ParcelNet, pairs: dict[str, str], tiles: np.ndarray) -> None:
    """Measure each re-expanded BatchNorm's input on ``tiles`` (the model is still the exported function) and
    set ``(m, v)``, ``γ = √(v+ε)``, ``β = b' + m`` — the same eval-mode function, a meaningful train mode."""
    modules = dict(model.named_modules())
    sums: dict[str, list[torch.Tensor]] = {}
    handles = []
    for bn_name in pairs.values():
        def record(_module, inputs, name=bn_name):
            x = inputs[0].double()
            total = sums.setdefault(name, [torch.zeros(x.shape[1], dtype=torch.float64),
                                           torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(())])
            total[0] += x.sum(dim=(0, 2, 3))
            total[1] += (x * x).sum(dim=(0, 2, 3))
            total[2] += x.shape[0] * x.shape[2] * x.shape[3]
        handles.append(modules[bn_name].register_forward_pre_hook(record))
    try:
        with torch.no_grad():
            model.eval()
            run_in_batches(lambda chunk: tuple(t.numpy() for t in model(torch.from_numpy(
                np.ascontiguousarray(chunk)))), tiles, 8)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for bn_name, (total, squares, count) in sums.items():
            bn = modules[bn_name]
            mean = total / count
            var = (squares / count - mean * mean).clamp_min(0.0)
            folded_bias = bn.bias.double().clone()
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((folded_bias + mean).float())


def _tiles(data: Path, spec: PreprocessSpec) -> np.ndarray:
    scans = load_scan_tiles(data, spec)
    if not scans:
        raise ParcelscanError(f"no readable scans under {data} to measure the BatchNorm statistics and parity on")
    return np.concatenate([s.tiles for s in scans]).astype(np.float32)


def parity(model: ParcelNet, metadata: ModelMetadata, onnx_path: Path, tiles: np.ndarray) -> dict[str, float]:
    """Max |Δ| per output between the torch model (wrapped as exported) and onnxruntime on ``tiles``."""
    wrapper = wrap_for_export(model.eval(), metadata.temperature)
    session = open_session(onnx_path, device="cpu", verify=False)

    def torch_run(batch: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            return tuple(t.numpy() for t in wrapper(torch.from_numpy(np.ascontiguousarray(batch))))

    reference = run_in_batches(torch_run, tiles, 8)
    got = run_in_batches(session.run, tiles, 8)
    diffs = {name: float(np.abs(g - r).max()) for name, g, r in zip(OUTPUT_NAMES, got, reference, strict=True)}
    diffs["logits"] /= max(1.0, float(np.abs(reference[1]).max()))
    return diffs


def checkpoint_from_onnx(onnx_path: str | Path, recipe: str | Path | None = None, data: str | Path | None = None,
                         out: str | Path | None = None, log=print) -> Path:
    """Rebuild ``<model>.pt`` (and ``<model>.pt.sha256``) beside ``onnx_path``; see the module docstring."""
    onnx_path = Path(onnx_path)
    out = Path(out) if out else onnx_path.with_suffix(".pt")
    metadata = read_metadata(onnx_path)
    spec = PreprocessSpec.from_dict(metadata.preprocessing)
    network = NetworkConfig(arch=metadata.arch, in_channels=spec.in_channels, num_classes=len(metadata.classes),
                            decoder_channels=LEGACY_SHAPE["decoder_channels"],
                            hidden_units=LEGACY_SHAPE["hidden_units"],
                            test_time_flips=int(metadata.extra.get("test_time_flips", 1)))  # parity checks it
    torch.manual_seed(0)
    model = build_from_config(network)
    pairs = _assign(model, onnx_path)
    _, _, inv_temperature = _graph_weights(onnx_path)
    if not abs(inv_temperature * metadata.temperature - 1.0) < 1e-6:
        raise ParcelscanError(f"{onnx_path}: the graph's temperature (1/{inv_temperature:.6g}) differs from its "
                              f"metadata ({metadata.temperature:.6g})")
    data = Path(data) if data else EXAMPLES
    tiles = _tiles(data, spec)
    identity_parity = parity(model, metadata, onnx_path, tiles)
    _set_statistics(model, pairs, tiles)
    final_parity = parity(model, metadata, onnx_path, tiles)
    log(f"parity torch vs onnxruntime on {len(tiles)} tiles of {data}: "
        + ", ".join(f"{k} {v:.2e}" for k, v in final_parity.items()) + f" (tolerance {PARITY_TOLERANCE:.0e})")
    worst = max(max(identity_parity.values()), max(final_parity.values()))
    if worst > PARITY_TOLERANCE:
        raise ParcelscanError(f"{onnx_path}: the rebuilt model differs from the file by {worst:.2e} "
                              f"(> {PARITY_TOLERANCE:.0e}); nothing written")
    config = load_config(recipe).to_dict() if recipe else {}
    if config and config.get("input_kind") != metadata.input_kind:
        raise ParcelscanError(f"{recipe} is a {config.get('input_kind')} recipe, the model takes {metadata.input_kind}")
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    checkpoint: dict[str, Any] = {
        "arch": metadata.arch, "in_channels": spec.in_channels, "network": network_entry(model), "model": state,
        "ema": None, "config": config, "preprocessing": metadata.preprocessing, "classes": list(metadata.classes),
        "threshold": metadata.threshold, "target_pfa": metadata.target_pfa, "temperature": metadata.temperature,
        "metrics": metadata.metrics, "data_fingerprint": metadata.data_fingerprint,
        "git_commit": metadata.git_commit, "created": metadata.created, "name": metadata.name,
        "version": metadata.version,
        "source": {"onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path), "method": METHOD,
                   "bn_statistics": {"data": "examples/scans" if data == EXAMPLES else str(data), "tiles": len(tiles)},
                   "parity_max_abs_diff": {k: float(f"{v:.3g}") for k, v in final_parity.items()},
                   "recipe": str(Path(recipe).name) if recipe else None},
    }
    save_checkpoint(out, checkpoint)
    digest = write_sha256(out)
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {digest[:16]}…) and {out.name}.sha256")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parcelscan.training.from_onnx", description=__doc__.split("\n")[0])
    parser.add_argument("onnx", help="an exported parcelscan model (.onnx)")
    parser.add_argument("--recipe", help="the training recipe (YAML) the model was trained with, stored as its config")
    parser.add_argument("--data", help="real scans for the BatchNorm statistics and the parity check "
                                       "(default: examples/scans)")
    parser.add_argument("--out", help="checkpoint to write (default: the ONNX file's name with .pt)")
    args = parser.parse_args(argv)
    try:
        checkpoint_from_onnx(args.onnx, args.recipe, args.data, args.out)
    except ParcelscanError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
