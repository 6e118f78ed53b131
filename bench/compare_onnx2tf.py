"""Benchmark: ONNX -> Keras/TensorFlow time, pipeline vs onnx2tf, on the same ONNX file.

Run with `make bench`.  Both tools get the ONNX file that pipeline exported from
a ConvNeXt-T-sized PyTorch model (models/torch_zoo.py:convnext_t, 1x3x224x224).
pipeline's time is normalize + import (ONNX -> model.py + weights), excluding
the PyTorch export both share and the parity run.  Two files: the dynamo
export pipeline itself uses, and a TorchScript-exporter file (opset 17), the
kind onnx2tf is built around; the ratio is measured on the latter.  onnx2tf runs offline: its
image-model calibration file is provided in its working folder.
Results go to build/bench/onnx2tf.json and are printed as a Markdown row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"


def _onnx2tf(onnx_path: Path, work: Path):
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy",
            np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    # onnx2tf is written for tf-keras (Keras 2); with Keras 3 it fails on ops like a constant Div.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_USE_LEGACY_KERAS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(work / "saved_model"), "-n"],
                          cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        (work / "onnx2tf.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    return round(seconds, 2), proc.returncode


def main() -> int:
    sys.path.insert(0, str(ROOT))
    import torch

    from models.torch_zoo import convnext_t
    from pipeline.convert import Options, convert

    OUT.mkdir(parents=True, exist_ok=True)
    # 1) pipeline's own path: PyTorch -> dynamo export -> Keras.  onnx2tf on that same file.
    ours_dyn = convert(Options(model=f"{ROOT}/models/torch_zoo.py:convnext_t", to="keras", out=str(OUT / "convnext_t"),
                               inputs=[__import__("pipeline.spec").spec.InputSpec("x", (1, 3, 224, 224))]))
    dyn_s, dyn_rc = _onnx2tf(OUT / "convnext_t" / "source.onnx", OUT / "onnx2tf_dynamo")
    # 2) the file onnx2tf is built around: the TorchScript exporter (opset 17).  Both tools take it.
    legacy = OUT / "convnext_t_torchscript.onnx"
    with torch.no_grad():
        torch.onnx.export(convnext_t(), (torch.randn(1, 3, 224, 224),), str(legacy), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"])
    ours = convert(Options(model=str(legacy), to="keras", out=str(OUT / "convnext_t_from_torchscript")))
    t = ours.report["timings_s"]
    ours_s = round(t["normalize"] + t["import"], 2)
    theirs_s, rc = _onnx2tf(legacy, OUT / "onnx2tf_torchscript")
    row = {
        "model": "convnext_t (28M params, 1x3x224x224)",
        "pipeline_onnx_to_keras_s": ours_s,
        "pipeline_parity": ours.report["parity"]["passed"],
        "pipeline_max_rel_err": ours.report["parity"]["outputs"][0]["max_rel_err"],
        "onnx2tf_s": theirs_s,
        "onnx2tf_exit_code": rc,
        # A time ratio means something only if onnx2tf produced a model.
        "ratio": round(theirs_s / ours_s, 1) if ours_s and rc == 0 else None,
        "dynamo_file": {"pipeline_parity": ours_dyn.report["parity"]["passed"],
                        "pipeline_onnx_to_keras_s": round(ours_dyn.report["timings_s"]["normalize"]
                                                          + ours_dyn.report["timings_s"]["import"], 2),
                        "onnx2tf_s": dyn_s, "onnx2tf_exit_code": dyn_rc},
    }
    (OUT / "onnx2tf.json").write_text(json.dumps(row, indent=2))
    d = row["dynamo_file"]
    print("| ONNX file | pipeline ONNX->Keras s (parity) | onnx2tf s (exit code) | onnx2tf / pipeline |")
    print("| --- | --- | --- | --- |")
    print(f"| TorchScript export, opset 17 | {ours_s} ({'pass' if row['pipeline_parity'] else 'FAIL'}) | {theirs_s} ({rc}) | {str(row['ratio']) + 'x' if row['ratio'] else 'onnx2tf failed'} |")
    print(f"| dynamo export (pipeline's own) | {d['pipeline_onnx_to_keras_s']} ({'pass' if d['pipeline_parity'] else 'FAIL'}) | {d['onnx2tf_s']} ({d['onnx2tf_exit_code']}) | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
