"""``python -m pipeline batch FILE.yaml``: convert many models, each in isolation.

Schema::

    output_dir: build/            # optional, default build/
    defaults:                     # optional: to, atol, rtol, opset, layout, seed, fold_bn
      atol: 1.0e-4
    models:
      - name: seed_keras_conv1d   # output lands in output_dir/name/
        model: seed_keras_conv1d  # anything `convert` accepts as MODEL
        to: torch                 # optional (default: the other framework)
        inputs: {x: [256, 237, 21]}   # optional; NAME: [dims] or NAME: {shape: [...], dtype: int64}
        atol: 1.0e-4              # optional, also rtol, opset, layout, seed
        fold_bn: true             # optional (default false): fold BatchNorm into the layer before it

One failing entry never stops the others.  A summary table is printed and
written to ``output_dir/summary.json``; the exit code is 0 only if every entry
passed.  An entry whose model, settings and pipeline version are unchanged
since its last passing conversion is skipped unless ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path

from . import __version__
from .errors import EXIT_INTERNAL, BadInput, PipelineError
from .spec import DTYPES, InputSpec

ENTRY_KEYS = {"name", "model", "to", "inputs", "atol", "rtol", "opset", "layout", "seed", "fold_bn"}
DEFAULT_KEYS = {"to", "atol", "rtol", "opset", "layout", "seed", "fold_bn"}


def load_config(path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise BadInput(f"batch file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}: YAML syntax error{where}: {problem}") from exc
    return validate(data, path)


def _number(value, where: str, path: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise BadInput(f"{path}: {where}: expected a non-negative number, got {value!r}")
    return float(value)


def _settings(entry: dict, where: str, path: str) -> dict:
    out = {}
    if "to" in entry:
        if entry["to"] not in ("torch", "keras"):
            raise BadInput(f"{path}: {where}.to: expected 'torch' or 'keras', got {entry['to']!r}")
        out["to"] = entry["to"]
    for key in ("atol", "rtol"):
        if key in entry:
            out[key] = _number(entry[key], f"{where}.{key}", path)
    for key in ("opset", "seed"):
        if key in entry:
            if isinstance(entry[key], bool) or not isinstance(entry[key], int):
                raise BadInput(f"{path}: {where}.{key}: expected an integer, got {entry[key]!r}")
            out[key] = entry[key]
    if "layout" in entry:
        if entry["layout"] not in ("source", "target"):
            raise BadInput(f"{path}: {where}.layout: expected 'source' or 'target', got {entry['layout']!r}")
        out["layout"] = entry["layout"]
    if "fold_bn" in entry:
        if not isinstance(entry["fold_bn"], bool):
            raise BadInput(f"{path}: {where}.fold_bn: expected true or false, got {entry['fold_bn']!r}")
        out["fold_bn"] = entry["fold_bn"]
    return out


def validate(data, path: str) -> dict:
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping with a 'models' list at the top level")
    unknown = set(data) - {"output_dir", "defaults", "models"}
    if unknown:
        raise BadInput(f"{path}: unknown top-level field(s): {', '.join(sorted(unknown))}")
    out_dir = data.get("output_dir", "build/")
    if not isinstance(out_dir, str) or not out_dir:
        raise BadInput(f"{path}: output_dir: expected a folder path")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise BadInput(f"{path}: defaults: expected a mapping")
    bad = set(defaults) - DEFAULT_KEYS
    if bad:
        raise BadInput(f"{path}: defaults: unknown field(s): {', '.join(sorted(bad))}")
    defaults = _settings(defaults, "defaults", path)
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise BadInput(f"{path}: models: expected a non-empty list")
    entries, names = [], set()
    for i, entry in enumerate(models):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            raise BadInput(f"{path}: {where}: expected a mapping with name and model")
        bad = set(entry) - ENTRY_KEYS
        if bad:
            raise BadInput(f"{path}: {where}: unknown field(s): {', '.join(sorted(bad))}")
        for key in ("name", "model"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise BadInput(f"{path}: {where}.{key}: required, a non-empty string")
        name = entry["name"]
        if "/" in name or name in (".", "..") or name.startswith("."):
            raise BadInput(f"{path}: {where}.name: {name!r} must be a plain folder name")
        if name in names:
            raise BadInput(f"{path}: {where}.name: {name!r} is used twice")
        names.add(name)
        specs = []
        inputs = entry.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise BadInput(f"{path}: {where}.inputs: expected a mapping NAME: [dims]")
        for iname, spec in inputs.items():
            specs.append(_input_spec(str(iname), spec, f"{path}: {where}.inputs.{iname}"))
        settings = {**defaults, **_settings(entry, where, path)}
        entries.append({"name": name, "model": entry["model"], "inputs": specs, **settings})
    return {"output_dir": out_dir, "entries": entries}


def _input_spec(name: str, spec, where: str) -> InputSpec:
    """One entry's input: ``[256, 237, 21]``, ``["B=4", "K=10", 128]`` (a string DIM is
    ``SYMBOL=INT``: an entry has no ``--dim``, so each symbol carries its example size) or
    ``{shape: [...], dtype: int64}``."""
    from .spec import parse_dim_token

    dtype = "float32"
    if isinstance(spec, dict):
        dtype = spec.get("dtype", "float32")
        spec = spec.get("shape")
    if not isinstance(spec, list) or not spec or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0)
            or (isinstance(d, str) and re.fullmatch(r"[A-Za-z_]\w*=[1-9][0-9]*", d.strip())) for d in spec):
        raise BadInput(f"{where}: expected a list of positive integers or \"SYMBOL=INT\" strings, got {spec!r}")
    if dtype not in DTYPES:
        raise BadInput(f"{where}.dtype: unknown dtype {dtype!r}")
    return InputSpec.of(name, [parse_dim_token(d, where, i) if isinstance(d, str) else d for i, d in enumerate(spec)],
                        dtype)


def _fingerprint(entry: dict) -> str:
    """Hash of what decides an entry's result: settings, the model's file, pipeline's version."""
    from .sources import MODELS_DIR

    h = hashlib.sha256()
    h.update(__version__.encode())
    # fold_bn: false is the default, so it hashes like an entry without the key.
    settings = {k: v for k, v in entry.items() if k != "inputs" and not (k == "fold_bn" and v is False)}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(json.dumps([(s.name, s.shape, s.dtype) for s in entry["inputs"]]).encode())
    model = entry["model"]
    candidates = [Path(model), Path(model.rpartition(":")[0]) if ":" in model else None, MODELS_DIR / f"{model}.py"]
    for c in candidates:
        if c is not None and c.is_file():
            h.update(c.read_bytes())
            break
        if c is not None and c.is_dir():
            for f in sorted(c.rglob("*")):
                if f.is_file():
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
            break
    return h.hexdigest()


def run_batch(path: str, force: bool = False, stream=sys.stdout) -> int:
    from .convert import Options, Progress, convert

    config = load_config(path)
    out_root = Path(config["output_dir"])
    out_root.mkdir(parents=True, exist_ok=True)
    rows = []
    total = len(config["entries"])
    for i, entry in enumerate(config["entries"], 1):
        name = entry["name"]
        out = out_root / name
        digest = _fingerprint(entry)
        print(f"[{i}/{total}] {name}: {entry['model']}", file=sys.stderr, flush=True)
        row = {"name": name, "model": entry["model"], "out": str(out)}
        previous = out / "report.json"
        if not force and previous.is_file():
            try:
                old = json.loads(previous.read_text())
                if old.get("input_hash") == digest and old["parity"]["passed"]:
                    rows.append({**row, "status": "skipped", "exit_code": 0, "detail": "unchanged since last pass"})
                    continue
            except Exception:
                pass
        start = time.perf_counter()
        opts = Options(model=entry["model"], to=entry.get("to"), out=str(out), inputs=entry["inputs"],
                       atol=entry.get("atol", 1e-4), rtol=entry.get("rtol", 1e-4), opset=entry.get("opset"),
                       layout=entry.get("layout", "source"), seed=entry.get("seed", 0),
                       fold_bn=entry.get("fold_bn", False))
        try:
            result = convert(opts, Progress(True))
            worst = max((c["max_abs_err"] for c in result.report["parity"]["outputs"]), default=0.0)
            report_path = result.out_dir / "report.json"
            rep = json.loads(report_path.read_text())
            rep["input_hash"] = digest
            report_path.write_text(json.dumps(rep, indent=2))
            status = "passed" if result.exit_code == 0 else "parity-failed"
            rows.append({**row, "status": status, "exit_code": result.exit_code, "target": rep["target"],
                         "max_abs_err": worst, "detail": str(result.out_dir)})
        except PipelineError as exc:
            rows.append({**row, "status": "error", "exit_code": exc.exit_code, "detail": str(exc)})
        except Exception as exc:  # keep going: one entry's bug must not stop the batch
            rows.append({**row, "status": "error", "exit_code": EXIT_INTERNAL,
                         "detail": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"})
        rows[-1]["seconds"] = round(time.perf_counter() - start, 2)
        print(f"    {rows[-1]['status']} ({rows[-1]['seconds']}s)", file=sys.stderr, flush=True)
    failed = [r for r in rows if r["status"] not in ("passed", "skipped")]
    summary = {"config": str(path), "output_dir": str(out_root), "passed": not failed, "entries": rows}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'status':<13} {'exit':>4}  detail", file=stream)
    for r in rows:
        detail = r.get("detail", "")
        if r["status"] == "passed":
            detail = f"max_abs_err={r['max_abs_err']:.3g}  -> {detail}"
        print(f"{r['name']:<{width}}  {r['status']:<13} {r['exit_code']:>4}  {detail}", file=stream)
    print(f"{len(rows) - len(failed)} of {len(rows)} entries ok; summary in {out_root / 'summary.json'}", file=stream)
    if not failed:
        return 0
    codes = {r["exit_code"] for r in failed}
    return codes.pop() if len(codes) == 1 else 1
