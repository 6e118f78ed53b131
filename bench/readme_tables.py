"""Regenerate the README's result tables from ``bench/results/*.json``.

Each table in README.md sits between ``<!-- results: NAME.json -->`` and ``<!-- /results -->``;
this script replaces what is between them with the table rendered from that file, headed by
where it came from (command, commit, machine).  A results file that does not exist yet
leaves its block as it is.  ``--check`` changes nothing and exits 1 when the README is not
what the files say.

    python bench/readme_tables.py [--check] [--results DIR] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def provenance(record: dict, target: str) -> str:
    m = record.get("machine") or {}
    load = m.get("load_average")
    dirty = " plus uncommitted changes" if record.get("dirty") else ""
    return (f"From `bench/results/{record['kind']}.json` (`{target}`: `{record['command']}`), commit "
            f"{record['commit']}{dirty}, {m.get('cpus')} CPUs, {m.get('memory_gib')} GiB, load average "
            f"{'/'.join(str(x) for x in load) if load else 'n/a'} at the end, finished {record['finished_utc']}.")


def zoo(record: dict) -> str:
    data = record["data"]
    lines = [provenance(record, "make zoo"), "",
             "| model | input | parameters | export s | convert s | max rel err | result | polymorphic |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in data["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | | | | | | error: {r['error'][:80]} | {polymorphic_cell(r)} |")
            continue
        params = f"{r['parameters'] / 1e6:.1f} M" if r.get("parameters") else ""
        lines.append(f"| {r['model']} | {r['input'][1]}x{r['input'][2]} | {params} | {r['export_s']:.1f} "
                     f"| {r['convert_s']:.1f} | {r['max_rel_err']:.1e} | {'pass' if r['passed'] else 'FAIL'} "
                     f"| {polymorphic_cell(r)} |")
    passed = sum(bool(r.get("passed")) for r in data["rows"])
    lines += ["", f"**{passed} of {len(data['rows'])} pass** (max rel err <= {data['max_rel_err_allowed']:g})."]
    checked = [r for r in data["rows"] if r.get("symbolic")]
    if checked:
        batch = sum(r["symbolic"]["batch"] == "pass" for r in checked)
        hw = sum(r["symbolic"]["hw"] == "pass" for r in checked)
        able = sum(r["symbolic"]["hw"] != "n/a" for r in checked)
        lines.append(f"Polymorphic (each converted again in a fresh process and checked at three size sets): "
                     f"**{batch} of {len(checked)}** with a symbolic batch; **{hw} of {able}** built on "
                     "`(None, None, 3)` with a symbolic height and width too.")
    return "\n".join(lines)


def polymorphic_cell(row: dict) -> str:
    """``B, H x W`` / ``B`` / what failed first (``make zoo``'s polymorphic column)."""
    sym = row.get("symbolic")
    if not sym:
        return ""
    short = {k: str(v).strip().replace("|", "/")[:70] for k, v in sym.items()}
    if sym["batch"] != "pass":
        return f"static only (B: {short['batch']})"
    if sym["hw"] == "pass":
        return "B, H x W"
    return "B" if sym["hw"] == "n/a" else f"B (H x W fails: {short['hw']})"


def fuzz(record: dict) -> str:
    d = record["data"]
    totals = {s: sum(c.get(s, 0) for c in d["conversions"].values())
              for s in ("pass", "known_gap", "refused", "mismatch", "crash")}
    worst = max((c["worst_passing_max_abs_err"] for c in d["conversions"].values()), default=0.0)
    per = ", ".join(f"{k} {sum(v.get(s, 0) for s in totals)}" for k, v in d["conversions"].items())
    return "\n".join([
        provenance(record, "make fuzz"), "",
        f"Seed {d['seed']} (replay: `make fuzz ARGS='--seed {d['seed']}'`), {d['cases']:,} cases in "
        f"{d['seconds'] / 60:.1f} min over {d.get('jobs', 1)} worker(s), {'complete' if d.get('complete') else 'INCOMPLETE'}: "
        f"**{totals['pass']:,} conversions pass, {totals['known_gap']} known-gap refusals, {totals['refused']} other "
        f"refusals, {totals['mismatch']} mismatches, {totals['crash']} crashes** (worst passing max abs error "
        f"{worst:.1e}; per direction: {per})."])


def onnx2tf(record: dict) -> str:
    lines = [provenance(record, "make bench"), "",
             "| model | ONNX file | parameters | onnx2tf s (check) | pipeline s (check) | onnx2tf / pipeline "
             "| pipeline / onnx2tf (issue 11: <= 0.1) | output / weights (without ONNX files) | measured |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def side(s):
        c = s["check"]
        return f"{s['best']['seconds']} ({'ok' if c.get('ok') else 'failed'}" + \
            (f", {c['max_abs_err']:.1e})" if "max_abs_err" in c else ")")

    for r in record["data"]["rows"]:
        ratio = f"**{r['ratio_onnx2tf_over_pipeline']}x**" if r["ratio_onnx2tf_over_pipeline"] else "n/a"
        lines.append(f"| {r['model']} | {r['onnx_file']} | {r['parameters'] / 1e6:.1f} M | {side(r['onnx2tf'])} "
                     f"| {side(r['pipeline'])} | {ratio} | {_target(r.get('pipeline_x_onnx2tf'), 0.1)} "
                     f"| {_output(r['pipeline']['best'])} | {_measured(r)} |")
    keras_rows = record["data"].get("keras_rows") or []
    if keras_rows:
        lines += ["", "| Keras -> PyTorch | parameters | tf2onnx export alone s | pipeline end to end s "
                      "| pipeline / tf2onnx (issue 11: <= 2) | output / weights (without ONNX files) | measured |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in keras_rows:
            lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {r['tf2onnx_export']['best']['seconds']} "
                         f"| {r['pipeline']['best']['seconds']} | {_target(r.get('pipeline_x_tf2onnx'), 2)} "
                         f"| {_output(r['pipeline']['best'])} | {_measured(r)} |")
    stages = [(f"{r['model']} ({r['onnx_file']}) -> Keras", r["pipeline"]["best"]) for r in record["data"]["rows"]]
    stages += [(f"{r['model']} -> PyTorch", r["pipeline"]["best"]) for r in keras_rows]
    stages = [(label, best) for label, best in stages if best.get("stages_s")]
    if stages:
        names = ("load", "export", "normalize", "import", "parity", "total")
        lines += ["", "pipeline's stages (seconds, the fastest run; `--profile` prints each pass):", "",
                  "| run | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
        for label, best in stages:
            lines.append(f"| {label} | " + " | ".join(f"{best['stages_s'][k]:.1f}" if k in best["stages_s"] else ""
                                                     for k in names) + " |")
    return "\n".join(lines)


def _target(value, bound) -> str:
    """A measured ratio against its issue-11 target: met, or the gap."""
    if value is None:
        return "n/a"
    return f"{value}x ({'met' if value <= bound else f'gap: {value / bound:.1f}x the target'})"


def _measured(row: dict) -> str:
    """When a row was measured and, where the row keeps it, at which commit (a run with ``--models``
    keeps the other models' earlier rows, so the file's commit is the last run's)."""
    when = row.get("measured_at", "")
    return f"{when}, commit {row['commit']}" if row.get("commit") else when


def _output(best: dict) -> str:
    out = best.get("output")
    return f"{out['total_x_weights']}x ({out['without_onnx_x_weights']}x)" if out else "n/a"


def memory(record: dict) -> str:
    lines = [provenance(record, "make bench"), "",
             "| direction | peak (warm baseline) | peak (import baseline) | worst stage | export | normalize | import | parity |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in record["data"]["rows"]:
        if "error" in r:
            lines.append(f"| {r['direction']} | failed: {r['error'][:80]} | | | | | | |")
            continue
        st = r["stages"]
        worst = max(st, key=lambda k: st[k]["peak_rss"])
        cells = " | ".join(f"{st[k]['peak_over_warm_x_weights']}x" if k in st else "" for k in
                           ("export", "normalize", "import", "parity"))
        lines.append(f"| {r['direction']} | **{r['peak_over_warm_x_weights']}x** | {r['peak_over_imports_x_weights']}x "
                     f"| {worst} | {cells} |")
    lines += ["", f"Goal: at most {record['data']['bound_x_weights']}x the weights (`make bench-check`)."]
    return "\n".join(lines)


def shapes(record: dict) -> str:
    d = record["data"]
    lines = [provenance(record, "make bench"), "",
             "| model | symbols | static convert s | polymorphic convert s (size sets) | cost | "
             "latency static / polymorphic ms | latency ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in d["rows"]:
        st, po = r["static"], r["polymorphic"]
        if "cost_ratio" not in r:
            failed = po if po.get("exit") else st
            lines.append(f"| {r['model']} | | {st['seconds']} | {po['seconds']} | failed: {failed.get('error', '')[:80]} | | |")
            continue
        symbols = ", ".join(f"{k}={v}" for k, v in po["symbols"].items()) or "none"
        lat = r["latency"]
        lat_cells = (f"{lat['static_ms']} / {lat['polymorphic_ms']} | **{lat['ratio']}x**" if "ratio" in lat
                     else f"failed: {lat.get('error', '')[:60]} |")
        lines.append(f"| {r['model']} | {symbols} | {st['seconds']} | {po['seconds']} ({po['size_sets']}) "
                     f"| **{r['cost_ratio']}x** | {lat_cells} |")
    lines += ["", f"Goals: a polymorphic conversion costs at most {d['cost_goal']}x the static one (its parity "
              f"runs at every size set) and its model runs at most {d['latency_goal']}x the static model's latency "
              f"at the example size (`make bench-check`)."]
    return "\n".join(lines)


def latency(record: dict) -> str:
    d = record["data"]
    lines = [provenance(record, "make bench"), "",
             "| model | round trip | batch 1: source / converted ms (ratio) | batch 32: source / converted ms (ratio) |",
             "| --- | --- | --- | --- |"]
    for r in d["rows"]:
        if r.get("exit_code"):
            lines.append(f"| {r['model']} | {r['framework']} | conversion failed (exit {r['exit_code']}) | |")
            continue
        cells = []
        for b in ("1", "32"):
            c = r["batches"][b]
            mark = "**" if not c["goal_met"] else ""
            cells.append(f"{c['source_ms']} / {c['converted_ms']} ({mark}{c['ratio']}x{mark})")
        lines.append(f"| {r['model']} | {r['framework']} -> {r['framework']} | {cells[0]} | {cells[1]} |")
    lines += ["", f"{d['timing']}, {d['threads']} thread(s); goal: converted at most {d['goal_ratio']}x the "
              "source (misses in bold)."]
    return "\n".join(lines)


def tflite(record: dict) -> str:
    def g(x):
        return f"{x:.2g}"

    lines = [provenance(record, "make bench"), "",
             "| model | fp32 max_rel | fp16 max_rel | int8 max_rel (top-1) | TRANSPOSE | ms at batch 1: torch / fp32 / fp16 / int8 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in record["data"]["rows"]:
        cells = []
        for kind in ("tflite:fp32", "tflite:fp16", "tflite:int8"):
            c = r.get(kind) or {}
            if not c.get("passed"):
                cells.append(f"fails: {(c.get('error') or 'not written')[:70]}")
                continue
            top1 = f" ({c['top1_agreement']:.2f})" if c.get("top1_agreement") is not None else ""
            cells.append(g(c["max_rel_err"]) + top1)
        transposes = max((r.get(k) or {}).get("transposes") or 0 for k in ("tflite:fp32", "tflite:fp16", "tflite:int8"))
        lat = r.get("latency_ms_batch1") or {}
        order = ("torch", "model.tflite", "model_fp16.tflite", "model_int8.tflite")
        lat_cell = " / ".join(f"{lat[k]:.2f}" if k in lat else "–" for k in order) if lat else "–"
        lines.append(f"| `torch_zoo:{r['model']}` | {' | '.join(cells)} | {transposes} | {lat_cell} |")
    return "\n".join(lines)


RENDER = {"latency.json": latency, "tflite.json": tflite, "shapes.json": shapes, "zoo.json": zoo, "fuzz.json": fuzz, "onnx2tf.json": onnx2tf, "memory.json": memory}


def render(text: str, folder: Path) -> str:
    def block(m):
        path = folder / m.group("name")
        if m.group("name") not in RENDER or not path.is_file():
            return m.group(0)
        return m.group(1) + RENDER[m.group("name")](json.loads(path.read_text())) + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the README differs; change nothing")
    p.add_argument("--results", default=str(REPO / "bench" / "results"))
    p.add_argument("--readme", default=str(REPO / "README.md"))
    args = p.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    new = render(text, Path(args.results))
    if args.check:
        if new != text:
            print(f"{readme} is not what {args.results} says: run python bench/readme_tables.py")
            return 1
        return 0
    if new != text:
        readme.write_text(new)
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
