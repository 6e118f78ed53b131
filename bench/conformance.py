"""ONNX conformance (``make conformance``): every backend node test that ships with ``onnx``,
converted to each target by the real pipeline and judged against the spec's outputs.

A test is in scope for a target when every op in its graph has a translator there
(``tests/node_tests.py: translator_ops``).  Each in-scope test runs as shipped and with
the inputs after the first made constants; onnxruntime runs it too, to record where it
departs from the spec.  Cases run in ``--workers`` processes (a crash or a hang past
``--timeout`` is that case's verdict: internal error).

Writes ``--out`` (default ``bench/results/conformance.json``): commit, machine, counts and
one record per case, rewritten as the run goes (``complete`` false until the end).  Prints a
summary table per target and the catalog of internal errors and wrong outputs, grouped by
op and message.  ``--render FILE`` prints the README section from a results file without
running anything; ``--update-readme`` writes it between the README's conformance markers.

Exit status 0 only if no case is an internal error or a wrong output.

    python bench/conformance.py [--targets torch,keras] [--tests SUBSTRING] [--workers 2]
    python bench/conformance.py --render bench/results/conformance.json [--update-readme]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import node_tests  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "conformance.json"
README = REPO / "README.md"
OP_USAGE = REPO / "bench" / "results" / "op-usage.json"
MARK_START, MARK_END = "<!-- conformance:start -->", "<!-- conformance:end -->"
STATUSES = ("pass", "refused", "internal", "wrong")


def machine() -> dict:
    from importlib.metadata import version

    libs = {}
    for lib in ("onnx", "onnxruntime", "onnx-ir", "onnxscript", "torch", "keras", "tensorflow"):
        try:
            libs[lib] = version(lib)
        except Exception:
            libs[lib] = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "libraries": libs}


def commit() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": bool(git("status", "--porcelain", "pipeline"))}


# --- grouping --------------------------------------------------------------------------


_UNSUPPORTED = re.compile(r"(\S+) at '[^']*'(?: \(([^)]*)\))?")


def reason_key(text: str) -> str:
    """A refusal's reason without node names: ``Clip: non-constant clip bounds``."""
    if "cannot be converted to" in text:
        parts = sorted({f"{op}: {why}" if why else op for op, why in _UNSUPPORTED.findall(text.split("): ", 1)[-1])})
        if parts:
            return "; ".join(parts)
    if "ValidateOpsetForDomain" in text:  # onnxruntime's message is a C++ signature, cut before its point
        return "onnxruntime cannot run the ONNX graph: its opset is newer than onnxruntime runs"
    text = re.sub(r"^\S+\.onnx: ", "", text)  # the test's file name
    text = re.sub(r"element type (\d+)", lambda m: "element type " + _type_name(int(m.group(1))), text)
    return message_key(re.sub(r"'[^']*'", "'…'", text))


def _type_name(code: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return str(code)


def message_key(text: str) -> str:
    """A message with the test's own names and numbers masked, to group alike failures."""
    text = re.sub(r"/\S+/", "", text)
    text = re.sub(r"\b\d+(\.\d+)?(e-?\d+)?\b", "N", text)
    return text[:160]


def counts(records: list[dict], target: str, variant: str) -> dict:
    mine = [r for r in records if r["target"] == target and r["variant"] == variant]
    c = collections.Counter(r["status"] for r in mine)
    refused = collections.Counter(reason_key(r.get("reason", "")) for r in mine if r["status"] == "refused")
    seconds = sorted(r["seconds"] for r in mine if "seconds" in r)
    return {"run": len(mine), **{s: c.get(s, 0) for s in STATUSES},
            "passed_with_other_dtype": sorted(r["test"] for r in mine if r["status"] == "pass" and r.get("dtypes_differ")),
            "seconds": {"total": round(sum(seconds), 1), "median": seconds[len(seconds) // 2] if seconds else None,
                        "max": seconds[-1] if seconds else None},
            "refused_exit": dict(collections.Counter(str(r.get("exit_code")) for r in mine if r["status"] == "refused")),
            "refused_by_reason": dict(refused.most_common())}


def referee_differs(records: list[dict]) -> set[str]:
    return {r["test"] for r in records if r["target"] == "onnxruntime" and r["status"] != "agrees"}


def catalog(records: list[dict]) -> list[dict]:
    """Internal errors and wrong outputs grouped by op and message, most frequent first."""
    ort = {r["test"]: r["status"] for r in records if r["target"] == "onnxruntime"}
    groups: dict[tuple, dict] = {}
    for r in records:
        if r["status"] not in ("internal", "wrong"):
            continue
        msg = r.get("error") or r.get("why") or ""
        key = (r["status"], r.get("op", "?"), message_key(msg))
        g = groups.setdefault(key, {"status": r["status"], "op": r.get("op", "?"), "message": msg, "count": 0,
                                    "targets": set(), "variants": set(), "where": set(), "tests": [],
                                    "onnxruntime": set()})
        g["count"] += 1
        g["targets"].add(r["target"])
        g["variants"].add(r["variant"])
        if r.get("where"):
            g["where"].add(r["where"])
        if r["test"] not in g["tests"]:
            g["tests"].append(r["test"])
        g["onnxruntime"].add(ort.get(r["test"], "?"))
    out = []
    for g in sorted(groups.values(), key=lambda g: (g["status"], -g["count"], g["op"])):
        out.append({**g, **{k: sorted(g[k]) for k in ("targets", "variants", "where", "onnxruntime")}})
    return out


def untranslated(skipped: list[dict]) -> list[dict]:
    """Per missing op: the tests that need it for each target, most tests first."""
    per: dict[str, dict] = {}
    for s in skipped:
        if s["status"] != "no translator":
            continue
        for op in s["missing"]:
            e = per.setdefault(op, {"op": op, "torch": set(), "keras": set()})
            e[s["target"]].add(s["test"])
    rows = [{"op": e["op"], "torch": len(e["torch"]), "keras": len(e["keras"]),
             "tests": sorted(e["torch"] | e["keras"])} for e in per.values()]
    return sorted(rows, key=lambda r: (-max(r["torch"], r["keras"]), r["op"]))


# --- printing ---------------------------------------------------------------------------


def summary_lines(result: dict) -> list[str]:
    lines = []
    for target in result["targets"]:
        lines.append(f"to {target}:")
        lines.append(f"  {'variant':10} {'run':>5} {'pass':>5} {'refused':>8} {'internal':>9} {'wrong':>6}"
                     f" {'median s':>9} {'max s':>7}")
        for variant in node_tests.VARIANTS:
            c = result["summary"].get(target, {}).get(variant)
            if c:
                lines.append(f"  {variant:10} {c['run']:5} {c['pass']:5} {c['refused']:8} {c['internal']:9} {c['wrong']:6}"
                             f" {c['seconds']['median'] or 0:9.2f} {c['seconds']['max'] or 0:7.1f}")
    skipped = collections.Counter((s["target"], s["status"]) for s in result["skipped"])
    lines.append("left out: " + ", ".join(f"{t} {s}: {n}" for (t, s), n in sorted(skipped.items())))
    lines.append(f"onnxruntime departs from the spec on {len(result['referee_departs'])} in-scope tests "
                 f"and cannot run {len(result['referee_cannot_run'])}")
    return lines


def catalog_lines(result: dict) -> list[str]:
    lines = []
    for g in result["catalog"]:
        tests = ", ".join(g["tests"][:4]) + (f" (+{len(g['tests']) - 4})" if len(g["tests"]) > 4 else "")
        where = f" [{', '.join(g['where'])}]" if g["where"] else ""
        lines.append(f"{g['status']:8} {g['count']:3}  {g['op']}: {g['message'][:150]}{where}")
        lines.append(f"{'':14}{'/'.join(g['targets'])} {'/'.join(g['variants'])}; onnxruntime "
                     f"{'/'.join(g['onnxruntime'])}; {tests}")
    return lines


TABLE_ROWS = 25  # untranslated ops with a table row; the rest are listed on one line
_ELEMENT_TYPE = re.compile(r"unsupported element type (\w+)")


def render(result: dict) -> str:
    """The README section: a table per target and the untranslated tests by op."""
    m = result["machine"]
    out = [MARK_START, "",
           f"`make conformance` (`{result['command']}`) at commit {result['commit']['commit']}, "
           f"onnx {m['libraries']['onnx']} ({result['tests_total']} node tests; "
           f"{sum(1 for s in result['skipped'] if s['status'] == 'not tensors')} hold sequences or optionals and are "
           f"left out), {result['seconds'] / 60:.0f} min with {result['workers']} workers on "
           f"{m['cpus']} cores. Results: `bench/results/conformance.json`. A test is in scope when every op "
           "in it has a translator; *constants* makes every input after the first an initializer "
           "(tests with one input run once, as shipped); the generated `model.py` is judged against the "
           "spec's expected outputs (float32 |err| ≤ 1e-5 + 1e-3·|expected|, integers exact). "
           f"{len({r['test'] for r in result['records'] if r.get('restamped_from')})} in-scope tests stamped with an "
           "opset newer than onnxruntime 1.23 runs (24) but valid at opset 23 too (the ops re-issued for new element "
           "types only) run stamped 23.", ""]
    for target in result["targets"]:
        out += [f"**To {'PyTorch' if target == 'torch' else 'Keras'}**", "",
                "| variant | tests run | passed | refused (exit 2 / 3) | internal errors | wrong |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for variant in node_tests.VARIANTS:
            c = result["summary"].get(target, {}).get(variant)
            if c:
                ex = c["refused_exit"]
                out.append(f"| {variant} | {c['run']} | {c['pass']} | {c['refused']} ({ex.get('2', 0)} / "
                           f"{ex.get('3', 0)}) | {c['internal']} | {c['wrong']} |")
        out += ["", "Refused, by reason (both variants):", "", "| reason | cases |", "| --- | ---: |"]
        reasons, types = collections.Counter(), set()
        for c in result["summary"].get(target, {}).values():
            for reason, n in c["refused_by_reason"].items():
                found = _ELEMENT_TYPE.search(reason)
                if found:  # one row for all the element types the pipeline does not take
                    types.add(found.group(1))
                    reason = _ELEMENT_TYPE.sub("unsupported element type", reason)
                reasons[reason] += n
        if types:
            for reason in [r for r in reasons if r.endswith("unsupported element type")]:
                reasons[f"{reason} ({', '.join(sorted(types))})"] = reasons.pop(reason)
        for reason, n in reasons.most_common(15):
            out.append(f"| {reason.replace('|', '/')} | {n} |")
        rest = sum(reasons.values()) - sum(n for _, n in reasons.most_common(15))
        if rest:
            out.append(f"| other reasons | {rest} |")
        out.append("")
    diff, cannot = result["referee_departs"], result["referee_cannot_run"]
    if diff or cannot:
        out += [f"onnxruntime, the referee of every normalize pass, itself departs from the spec on {len(diff)} "
                f"in-scope tests ({', '.join(f'`{t}`' for t in diff[:8])}{' …' if len(diff) > 8 else ''}) and "
                f"cannot run {len(cannot)}.", ""]
    rows = result["untranslated"]
    usage = result.get("op_usage") or {}
    if usage:
        rows = sorted(rows, key=lambda r: (-usage.get(r["op"], 0), -max(r["torch"], r["keras"]), r["op"]))
    out += ["Node tests left out for want of a translator, by op" +
            (" (most used in exported models first: how many of the "
             f"{result.get('op_usage_models', '?')} models of {result.get('op_usage_sources', '?')}, exported as "
             "`make convert` exports them, have the op in their ONNX graph as written, before constant folding; "
             "`python bench/conformance.py --op-usage` writes `bench/results/op-usage.json`)"
             if usage else " (most tests first)") + ":", "",
            "| op | " + ("models using it | " if usage else "") + "tests (PyTorch) | tests (Keras) |",
            "| --- | " + ("---: | " if usage else "") + "---: | ---: |"]
    for r in rows[:TABLE_ROWS]:
        used = f"{usage.get(r['op'], 0)} | " if usage else ""
        out.append(f"| {r['op']} | {used}{r['torch']} | {r['keras']} |")
    if rows[TABLE_ROWS:]:
        unused = not any(usage.get(r["op"]) for r in rows[TABLE_ROWS:])
        out += ["", f"and {len(rows) - TABLE_ROWS} more{', in no exported model here' if usage and unused else ''} "
                "(tests, PyTorch / Keras): "
                + ", ".join(f"{r['op']} ({r['torch']}/{r['keras']})" for r in rows[TABLE_ROWS:]) + "."]
    out += ["", MARK_END]
    return "\n".join(out)


def update_readme(text: str) -> None:
    readme = README.read_text()
    if MARK_START in readme:
        head, rest = readme.split(MARK_START, 1)
        readme = head + text + rest.split(MARK_END, 1)[1]
    else:
        raise SystemExit(f"{README}: no {MARK_START} marker; add the section first")
    README.write_text(readme)


# --- which ops exported models use ------------------------------------------------------


def zoo_sources() -> list[tuple[str, str, list]]:
    """``(label, MODEL, input specs)`` of the models this repo converts in its tests and sweeps:
    the PyTorch families, the Hugging Face tiny models and one keras.applications model per family."""
    from keras_zoo import one_per_family, write_factory

    from models import hf_zoo, torch_zoo
    from pipeline.spec import InputSpec

    def specs(shapes):
        return [InputSpec(k, tuple(v[0]), v[1]) if isinstance(v[1], str) else InputSpec(k, tuple(v))
                for k, v in shapes.items()]

    out = [(f"torch_zoo.{n}", f"models/torch_zoo.py:{n}", specs(s)) for n, s in sorted(torch_zoo.SHAPES.items())]
    out += [(f"hf_zoo.{n}", f"models/hf_zoo.py:{n}", specs(s)) for n, s in sorted(hf_zoo.SHAPES.items())]
    folder = Path(tempfile.mkdtemp(prefix="op-usage-"))
    for name in one_per_family():
        path, _ = write_factory(name, folder / name)
        out.append((f"keras.applications.{name}", f"{path}:build", []))
    return out


def op_usage(out: Path) -> int:
    """Export every zoo model as ``make convert`` would and count, per op type, the models whose
    exported graph uses it; writes ``out`` (``{"models": {label: ops}, "ops": {op: models}}``)."""
    import onnx

    from pipeline import export
    from pipeline.sources import resolve
    from pipeline.spec import make_inputs

    used, failed = {}, {}
    sources = zoo_sources()

    def write(complete: bool) -> None:  # after every model: an interrupted count keeps what it has
        ops = collections.Counter(op for found in used.values() for op in found)
        out.write_text(json.dumps({"commit": commit(), "command": "python bench/conformance.py --op-usage",
                                   "complete": complete, "models": used, "failed": failed,
                                   "ops": dict(ops.most_common())}, indent=1))

    for label, model, specs in sources:
        path = Path(tempfile.mkdtemp(prefix="op-usage-")) / "source.onnx"
        try:
            source = resolve(model, specs)
            export.export(source, make_inputs(source.inputs, 0), path)
            used[label] = node_tests.graph_ops(onnx.load(str(path), load_external_data=False))
            print(f"{label}: {len(used[label])} op types", flush=True)
        except Exception as exc:
            failed[label] = f"{type(exc).__name__}: {node_tests.first_line(exc)}"
            print(f"{label}: {failed[label]}", flush=True)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        write(False)
    write(True)
    print(f"written: {out}")
    return 0


# --- running ----------------------------------------------------------------------------


def assemble(records, skipped, args, started, complete, names) -> dict:
    """The results file: provenance, then everything :func:`derive` computes from the records."""
    result = {"commit": commit(), "machine": machine(),
              "command": " ".join(["python", "bench/conformance.py", *sys.argv[1:]]), "complete": complete,
              "seconds": round(time.perf_counter() - started, 1), "workers": args.workers, "tests_total": len(names),
              "targets": args.targets,
              "tolerance": {str(k): {"atol": a, "rtol": r} for k, (a, r) in node_tests.TOLERANCE.items()},
              "skipped": skipped, "records": sorted(records, key=lambda r: (r["test"], r["target"], r["variant"]))}
    return derive(result)


def derive(result: dict) -> dict:
    """Counts, referee disagreements, the failure catalog and the untranslated ops, from the records
    (recomputed by ``--render``, so a results file renders with the current grouping rules)."""
    records, skipped = result["records"], result["skipped"]
    in_scope = {r["test"] for r in records if r["target"] != "onnxruntime"}
    result["summary"] = {t: {v: counts(records, t, v) for v in node_tests.VARIANTS
                             if any(r["target"] == t and r["variant"] == v for r in records)}
                         for t in result["targets"]}
    referee = {r["test"]: r for r in records if r["target"] == "onnxruntime" and r["test"] in in_scope}
    result["referee_departs"] = sorted(t for t, r in referee.items() if r["status"] == "differs")
    result["referee_cannot_run"] = sorted(t for t, r in referee.items() if r["status"] == "cannot run")
    result["catalog"] = catalog(records)
    result["untranslated"] = untranslated(skipped)
    if OP_USAGE.exists():
        usage = json.loads(OP_USAGE.read_text())
        result["op_usage"], result["op_usage_models"] = usage["ops"], len(usage["models"])
        prefixes = sorted({label.rsplit(".", 1)[0] for label in usage["models"]})
        result["op_usage_sources"] = ", ".join(f"`models/{p}.py`" if p.endswith("_zoo") else f"`{p}`" for p in prefixes)
    return dict(sorted(result.items(), key=lambda kv: kv[0] in ("skipped", "records")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default=",".join(node_tests.TARGETS))
    p.add_argument("--variants", default=",".join(node_tests.VARIANTS))
    p.add_argument("--tests", default="", help="only tests whose name contains this (comma-separated: any of them)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds one case may take")
    p.add_argument("--recycle", type=int, default=150, help="tasks per worker process before it is replaced")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--render", type=Path, help="print the README section from this results file; run nothing")
    p.add_argument("--update-readme", action="store_true", help="with --render: write it into README.md")
    p.add_argument("--op-usage", action="store_true",
                   help=f"count the op types the zoo models export to, into {OP_USAGE.relative_to(REPO)}; run nothing else")
    args = p.parse_args(argv)
    if args.op_usage:
        return op_usage(OP_USAGE)
    if args.render:
        result = derive(json.loads(args.render.read_text()))
        text = render(result)
        if args.update_readme:
            update_readme(text)
        print(text)
        return 0
    args.targets = [t for t in args.targets.split(",") if t]
    variants = [v for v in args.variants.split(",") if v]
    names = node_tests.test_names()
    wanted = [w for w in args.tests.split(",") if w]
    if wanted:
        names = [n for n in names if any(w in n for w in wanted)]
    tasks, skipped = node_tests.plan(names, args.targets, variants)
    print(f"{len(names)} node tests, {len(tasks)} tasks ({args.workers} workers)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = []
    for record in node_tests.Pool(args.workers, args.timeout, args.recycle).run(tasks):
        records.append(record)
        if record["status"] in ("internal", "wrong"):
            print(f"  {record['status']}: {record['test']} -> {record['target']} ({record['variant']}): "
                  f"{record.get('error') or record.get('why')}", flush=True)
        if len(records) % 100 == 0:
            print(f"{len(records)}/{len(tasks)} done, {time.perf_counter() - started:.0f} s", flush=True)
            args.out.write_text(json.dumps(assemble(records, skipped, args, started, False, names), indent=1))
    result = assemble(records, skipped, args, started, True, names)
    args.out.write_text(json.dumps(result, indent=1))
    print("\n".join(summary_lines(result)))
    print("\ninternal errors and wrong outputs, by op and message:")
    print("\n".join(catalog_lines(result)) or "  none")
    print(f"\nwritten: {args.out}")
    return 0 if not result["catalog"] else 1


if __name__ == "__main__":
    sys.exit(main())
