"""``python -m pipeline batch FILE.yaml``: convert many models, each in isolation.

Schema::

    output_dir: build/            # optional, default build/
    defaults:                     # optional: to, atol, rtol, opset, layout, seed, fold_bn, gradients, static
      atol: 1.0e-4
    models:
      - name: seed_keras_conv1d   # output lands in output_dir/name/
        model: seed_keras_conv1d  # anything `convert` accepts as MODEL
        to: torch                 # optional (default: the other framework)
        inputs: {x: [256, 237, 21]}   # optional; NAME: [dims] or NAME: {shape: [...], dtype: int64}
        atol: 1.0e-4              # optional, also rtol, opset, layout, seed
        fold_bn: true             # optional (default false): fold BatchNorm into the layer before it
        gradients: true           # optional (default false): gradient parity, as --gradients
        static: true              # optional (default false): every dimension fixed, as --static
        export: [tflite, saved_model]   # optional: deployable artifacts, each checked (see --export)
        calibration: data/cal.npz # optional: calibration batches for export tflite:int8

A ``model`` that names a whole zoo (``torch_zoo``) stands for one entry per member.

Every entry is converted in its own worker process (``batch_worker``), so not even a
crash stops the others; ``--jobs N`` runs N at once and ``--ray`` runs them as Ray
tasks (``batch_ray``).  A summary table is printed and written to
``output_dir/summary.json``; the exit code is 0 only if every entry passed, and
neither depends on the mode.  An entry whose model, settings and pipeline version are
unchanged since its last passing conversion is skipped unless ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from . import __version__
from .errors import BadInput
from .spec import DTYPES, InputSpec

FLAGS = ("fold_bn", "gradients", "static")  # true/false, as --fold-bn, --gradients, --static; false by default
ENTRY_KEYS = {"name", "model", "to", "inputs", "atol", "rtol", "opset", "layout", "seed", *FLAGS, "export",
              "calibration"}
DEFAULT_KEYS = {"to", "atol", "rtol", "opset", "layout", "seed", *FLAGS, "export", "calibration"}


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
    for key in FLAGS:
        if key in entry:
            if not isinstance(entry[key], bool):
                raise BadInput(f"{path}: {where}.{key}: expected true or false, got {entry[key]!r}")
            out[key] = entry[key]
    out.update(_export_settings(entry, where, path))
    return out


def _export_settings(entry: dict, where: str, path: str) -> dict:
    """``export: [tflite:int8, saved_model]`` (or one string) and ``calibration: FILE``, as for
    ``--export`` / ``--calibration``; whether the target can produce them is said when it runs."""
    from .artifacts import parse_export

    out = {}
    if "export" in entry:
        value = entry["export"]
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise BadInput(f"{path}: {where}.export: expected a list such as [tflite, saved_model], "
                           f"got {entry['export']!r}")
        try:
            out["export"] = [parse_export(v) for v in value]
        except BadInput as exc:
            raise BadInput(f"{path}: {where}.export: {exc}") from exc
    if "calibration" in entry:
        if not isinstance(entry["calibration"], str) or not entry["calibration"]:
            raise BadInput(f"{path}: {where}.calibration: expected a file or folder path, got {entry['calibration']!r}")
        out["calibration"] = entry["calibration"]
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
        specs = parse_inputs(entry.get("inputs"), where, path)
        settings = {**defaults, **_settings(entry, where, path)}
        members = zoo_members(entry["model"])
        if members is None:
            entries.append({"name": name, "model": entry["model"], "inputs": specs, **settings})
            continue
        if specs:
            raise BadInput(f"{path}: {where}.inputs: {entry['model']!r} names a whole zoo, whose members "
                           "have their own inputs; list a member (ZOO:member) to set them")
        for member in members:  # a whole zoo: one entry per member, NAME_member
            sub = f"{name}_{member}"
            if sub in names:
                raise BadInput(f"{path}: {where}.name: {sub!r} (zoo member) is used twice")
            names.add(sub)
            entries.append({"name": sub, "model": f"{entry['model']}:{member}", "inputs": [], **settings})
    return {"output_dir": out_dir, "entries": entries}


def _input_spec(name: str, spec, where: str) -> InputSpec:
    """One entry's input: ``[256, 237, 21]``, ``["B=4", "K=10", 128]`` (a string DIM is
    ``SYMBOL=INT``: an entry has no ``--dim``, so each symbol carries its example size) or
    ``{shape: [...], dtype: int64}`` (with ``range: [0, 30000]``: an integer input's values
    are drawn from ``[0, 30000)``)."""
    from .spec import check_range, parse_dim_token, parse_range

    dtype, values = "float32", None
    if isinstance(spec, dict):
        unknown = set(spec) - {"shape", "dtype", "range"}
        if unknown:
            raise BadInput(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} (known: shape, dtype, range)")
        dtype = spec.get("dtype", "float32")
        values = parse_range(spec["range"], f"{where}.range") if "range" in spec else None
        spec = spec.get("shape")
    if not isinstance(spec, list) or not spec or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0)
            or (isinstance(d, str) and re.fullmatch(r"[A-Za-z_]\w*=[1-9][0-9]*", d.strip())) for d in spec):
        raise BadInput(f"{where}: expected a list of positive integers or \"SYMBOL=INT\" strings, got {spec!r}")
    if dtype not in DTYPES:
        raise BadInput(f"{where}.dtype: unknown dtype {dtype!r}")
    out = InputSpec.of(name, [parse_dim_token(d, where, i) if isinstance(d, str) else d for i, d in enumerate(spec)],
                       dtype, values)
    check_range(out, where)
    return out


def parse_inputs(inputs, where: str, path: str) -> list[InputSpec]:
    """An entry's ``inputs``: ``NAME: [dims]`` or ``NAME: {shape: [dims], dtype: int64}`` (see ``_input_spec``)."""
    inputs = inputs or {}
    if not isinstance(inputs, dict):
        raise BadInput(f"{path}: {where}.inputs: expected a mapping NAME: [dims]")
    return [_input_spec(str(iname), spec, f"{path}: {where}.inputs.{iname}") for iname, spec in inputs.items()]


def zoo_members(model: str) -> list[str] | None:
    """The members of a registered zoo (``models/ZOO.py`` with a ``SHAPES`` dict and no ``build``), else None.

    Read from the file's syntax tree, so naming a zoo in a batch file imports no framework.
    """
    import ast
    import re

    from .sources import MODELS_DIR

    file = MODELS_DIR / f"{model}.py"
    if not re.fullmatch(r"[A-Za-z_]\w*", model) or not file.is_file():
        return None
    tree = ast.parse(file.read_text())
    if any(isinstance(n, ast.FunctionDef) and n.name == "build" for n in tree.body):
        return None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "SHAPES" for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            return [k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return None


def _fingerprint(entry: dict) -> str:
    """Hash of what decides an entry's result: settings, the model's file, pipeline's version."""
    from .sources import MODELS_DIR

    h = hashlib.sha256()
    h.update(__version__.encode())
    # A flag set to false is the default, so it hashes like an entry without the key.
    settings = {k: v for k, v in entry.items() if k != "inputs" and not (k in FLAGS and v is False)}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(json.dumps([s.as_arg() for s in entry["inputs"]]).encode())  # symbols and ranges decide it too
    model = entry["model"]
    candidates = [Path(model), Path(model.rpartition(":")[0]) if ":" in model else None, MODELS_DIR / f"{model}.py",
                  MODELS_DIR / f"{model.partition(':')[0]}.py"]  # a zoo member: ZOO:member
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



STATUS_OK = ("passed", "skipped")


def _up_to_date(out: Path, digest: str) -> bool:
    """True when ``out`` holds a passing conversion of exactly this entry (same fingerprint)."""
    try:
        old = json.loads((out / "report.json").read_text())
        return old.get("input_hash") == digest and bool(old["parity"]["passed"])
    except Exception:
        return False


def plan(config: dict, force: bool) -> tuple[list[dict], dict[str, dict]]:
    """Split the entries into tasks to run and rows already settled (skipped, up to date).

    A task is plain JSON (it crosses a process or a Ray task): the entry's settings,
    its inputs as lists, where it lands and the fingerprint its report will carry.
    """
    out_root = Path(config["output_dir"])
    tasks, settled = [], {}
    for entry in config["entries"]:
        name = entry["name"]
        out = out_root / name
        digest = _fingerprint(entry)
        if not force and _up_to_date(out, digest):
            settled[name] = {"name": name, "model": entry["model"], "out": str(out), "status": "skipped",
                             "exit_code": 0, "detail": "unchanged since last pass"}
            continue
        task = {k: v for k, v in entry.items() if k != "inputs"}
        task["inputs"] = [s.as_arg() for s in entry["inputs"]]  # symbols and value ranges included
        task.update(out=str(out), digest=digest)
        tasks.append(task)
    return tasks, settled


def run_batch(path: str, force: bool = False, stream=sys.stdout, jobs: int | None = None,
              ray: str | None = None, timeout: float | None = None, max_memory: int | None = None,
              debug: bool = False) -> int:
    """Convert every entry of a batch file, each in a fresh worker process; return the batch's exit code.

    ``jobs`` entries run at once on this machine, or, with ``ray`` (an address, or "local" for a
    Ray instance started here), as Ray tasks.  The summary and the exit code do not depend on either.
    """
    from .batch_worker import Display, default_jobs, run_local

    config = load_config(path)
    if ray is not None:
        from .batch_ray import import_ray

        import_ray()  # without Ray, --ray is a usage error even when every entry is up to date
    out_root = Path(config["output_dir"])
    out_root.mkdir(parents=True, exist_ok=True)
    names = [e["name"] for e in config["entries"]]
    tasks, rows = plan(config, force)
    limits = {"timeout": timeout, "max_memory": max_memory, "debug": debug}
    if ray is not None:
        from .batch_ray import run_ray

        runner = lambda display: run_ray(tasks, ray, jobs, limits, display)  # noqa: E731
    else:
        jobs = jobs or default_jobs(max_memory)
        runner = lambda display: run_local(tasks, jobs, limits, display)  # noqa: E731
    display = Display(len(names), done=len(rows))
    try:  # nothing to run: no workers, no cluster
        finished, interrupted = runner(display) if tasks else ({}, False)
    finally:
        display.close()
    rows.update(finished)
    for name in names:
        if name not in rows:
            entry = next(e for e in config["entries"] if e["name"] == name)
            rows[name] = {"name": name, "model": entry["model"], "out": str(out_root / name), "status": "not-run",
                          "exit_code": 130, "detail": "interrupted before it finished"}
    ordered = [rows[n] for n in names]
    return _summarize(path, out_root, ordered, interrupted, stream)


def _summarize(path: str, out_root: Path, rows: list[dict], interrupted: bool, stream) -> int:
    """Write ``summary.json``, print the table, return the batch's exit code."""
    failed = [r for r in rows if r["status"] not in STATUS_OK]
    not_run = [r["name"] for r in rows if r["status"] == "not-run"]
    summary = {"config": str(path), "output_dir": str(out_root), "passed": not failed,
               "interrupted": interrupted, "not_run": not_run, "entries": rows}
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'status':<13} {'exit':>4}  detail", file=stream)
    for r in rows:
        detail = r.get("detail", "")
        if r["status"] == "passed":
            detail = f"max_abs_err={r['max_abs_err']:.3g}  -> {detail}"
        print(f"{r['name']:<{width}}  {r['status']:<13} {r['exit_code']:>4}  {detail}", file=stream)
    print(f"{len(rows) - len(failed)} of {len(rows)} entries ok; summary in {out_root / 'summary.json'}", file=stream)
    if interrupted:
        return 130
    if not failed:
        return 0
    codes = {r["exit_code"] for r in failed}
    return codes.pop() if len(codes) == 1 else 1
