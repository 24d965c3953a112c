"""Batch-1 latency and batch-32 throughput of the same weights in eager PyTorch, onnxruntime FP32 and
onnxruntime INT8 (static QDQ), measured in one run with the runs interleaved (so that load from other
processes hits every contender alike), reported as ratios.

Tiles are real: simulated station scans through the one preprocessing. Model: ``--checkpoint``, else
the default architecture untrained (speed does not depend on what the weights learned; INT8 *accuracy*
does, and is judged by ``parcelscan export --int8`` on labelled scans, not here).

    python benchmarks/onnx_vs_torch_bench.py [--checkpoint PT] [--scans DIR] [--threads 2] [--repeats 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


class _TorchRunner:
    """Eager PyTorch behind the ``run(None, {name: x})`` interface that ``time_sessions`` calls."""

    def __init__(self, wrapper):
        self.wrapper = wrapper

    def run(self, _outputs, feeds):
        import torch

        with torch.inference_mode():
            return self.wrapper(torch.from_numpy(next(iter(feeds.values()))))


def main() -> None:
    from bench_model import simulate, untrained_checkpoint
    from machine import describe_machine

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="checkpoint to export (default: untrained default architecture)")
    parser.add_argument("--scans", help="station scans for tiles and INT8 calibration (default: simulate 24)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch and onnxruntime (default 2)")
    parser.add_argument("--repeats", type=int, default=100, help="batch-1 runs per contender (default 100)")
    args = parser.parse_args()

    # Interleaved runs of two frameworks: neither may keep its idle threads spinning on the cores the other
    # needs next (OpenMP's and onnxruntime's default), or each measures the other's busy-waiting.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import onnxruntime as ort
    import torch

    from parcelscan.model.checkpoint import load_checkpoint
    from parcelscan.model.export import (
        export_model,
        load_scan_tiles,
        metadata_from_info,
        quantize_int8,
        time_sessions,
        wrap_for_export,
    )

    torch.set_num_threads(args.threads)
    print(f"machine: {describe_machine()}")
    print(f"torch {torch.__version__} ({args.threads} threads), onnxruntime {ort.__version__} "
          f"({args.threads} intra-op threads), CPUExecutionProvider")
    workdir = Path(tempfile.mkdtemp(prefix="parcelscan-ortbench-"))
    try:
        scans = Path(args.scans) if args.scans else simulate(workdir / "scans", 24)
        checkpoint = Path(args.checkpoint) if args.checkpoint else untrained_checkpoint(workdir / "untrained.pt", scans)
        model, info = load_checkpoint(checkpoint)
        metadata = metadata_from_info(info, "bench")
        print(f"model: {info.get('arch')} from {checkpoint.name}"
              + ("" if args.checkpoint else " (untrained: speed only)"))
        fp32_path = workdir / "fp32.onnx"
        export_model(model, info, fp32_path, scans, log=lambda line: print(f"export: {line}"))
        from parcelscan.datasets.preprocess import PreprocessSpec

        spec = PreprocessSpec.from_dict(metadata.preprocessing)
        tiles = np.concatenate([s.tiles for s in load_scan_tiles(scans, spec)])
        int8_path = workdir / "int8.onnx"
        quantize_int8(fp32_path, int8_path, tiles[:64], metadata.to_props(), workdir)
        print(f"tiles: {len(tiles)} real tiles {tiles.shape[1:]} from {scans}; INT8 calibrated on "
              f"{min(64, len(tiles))}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        contenders = {
            "torch eager FP32": _TorchRunner(wrap_for_export(model, metadata.temperature)),
            "onnxruntime FP32": ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"]),
            "onnxruntime INT8": ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"]),
        }
        probe = np.ascontiguousarray(tiles[:8])
        reference = contenders["onnxruntime FP32"].run(None, {"scan": probe})[0]
        quantized = contenders["onnxruntime INT8"].run(None, {"scan": probe})[0]
        print(f"INT8 vs FP32 on 8 tiles: max |Δ suspect_probability| {np.abs(quantized - reference).max():.2e}")

        start = time.perf_counter()
        batch1 = time_sessions(contenders, tiles, batch=1, repeats=args.repeats, warmup=5)
        batch8 = time_sessions(contenders, tiles, batch=8, repeats=max(5, args.repeats // 5), warmup=2)
        batch32 = time_sessions(contenders, tiles, batch=32, repeats=max(3, args.repeats // 20), warmup=1)
        print(f"\n{'':<18} {'batch-1 ms (median)':>20} {'batch-8 tiles/s':>16} {'batch-32 tiles/s':>17}")
        for name in contenders:
            print(f"{name:<18} {batch1[name]:>20.2f} {8000.0 / batch8[name]:>16.1f} {32000.0 / batch32[name]:>17.1f}")
        torch_1, fp32_1, int8_1 = (batch1[k] for k in contenders)
        _, fp32_8, int8_8 = (batch8[k] for k in contenders)
        torch_32, fp32_32, int8_32 = (batch32[k] for k in contenders)
        print(f"\nonnxruntime FP32 vs torch: ×{torch_1 / fp32_1:.2f} faster at batch 1, ×{torch_32 / fp32_32:.2f} "
              f"throughput at batch 32")
        station = min(fp32_1 / int8_1, fp32_8 / int8_8)
        print(f"INT8 vs FP32 (onnxruntime): ×{fp32_1 / int8_1:.2f} at batch 1, ×{fp32_8 / int8_8:.2f} at batch 8, "
              f"×{fp32_32 / int8_32:.2f} at batch 32 ({'faster' if station >= 1.1 else 'not clearly faster'} at the "
              f"station's batch sizes 1 and 8 on this CPU)")
        print(f"({time.perf_counter() - start:.0f} s of timing)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
