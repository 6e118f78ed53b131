"""``report.html``: the report as one static page (no scripts, no network)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.pass{color:#0a7a26;font-weight:600}.fail{color:#b00020;font-weight:600}
code{background:#f5f5f5;padding:0 .2em}img{max-width:100%}"""


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(x) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) else html.escape(str(x))


def _plot(nodes: list[dict]) -> str | None:
    if not nodes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errs = [max(n["max_abs_err"], 1e-12) for n in nodes]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.semilogy(range(len(errs)), errs, marker="o", ms=3)
    ax.margins(x=0.03, y=0.15)
    bad = [i for i, n in enumerate(nodes) if not n["passed"]]
    if bad:
        ax.axvline(bad[0], color="#b00020", ls="--", lw=1, label=f"first divergence: {nodes[bad[0]]['onnx_node']}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("node (topological order in normalized.onnx)")
    ax.set_ylabel("max abs error")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _sizes(sizes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def _shapes_section(report: dict) -> list[str]:
    """Symbols, pinned dimensions and parity at each size set (conversions with symbols only)."""
    parts = []
    if report.get("symbols"):
        parts += ["<h2>Symbolic dimensions</h2>",
                  _table(["symbol", "example", "where"],
                         [[f"<code>{html.escape(s['name'])}</code>", s["example"],
                           html.escape(", ".join(f"{n}[{a}]" for n, a in s["places"]))] for s in report["symbols"]])]
    if report.get("pinned"):
        parts += ["<h2>Pinned dimensions</h2>",
                  _table(["symbol", "size", "where", "pinned by", "why"],
                         [[f"<code>{html.escape(p['symbol'])}</code>", p["size"],
                           html.escape(", ".join(f"{n}[{a}]" for n, a in p["places"])),
                           f"<code>{html.escape(p['where'])}</code>" if p.get("where") else "&ndash;",
                           html.escape(p["reason"])] for p in report["pinned"]])]
    shapes = report["parity"].get("shapes")
    if shapes:
        rows = []
        for s in shapes:
            label = html.escape(_sizes(s["sizes"])) + (" (example)" if s.get("example") else "")
            if s.get("passed") is None:
                rows.append([label, "&ndash;", "&ndash;", f"skipped: {html.escape(s.get('skipped', ''))}"])
                continue
            comps = [c for cs in s["stages"].values() for c in cs]
            worst = max((c["max_abs_err"] for c in comps), default=float("nan"))
            ok = '<span class="pass">ok</span>' if s["passed"] else '<span class="fail">FAIL</span>'
            rows.append([label, html.escape(", ".join(f"{k}{v}" for k, v in s.get("inputs", {}).items())),
                         _fmt(worst), ok + "".join(f"<br>{html.escape(p)}" for p in s.get("problems", []))])
        parts += ["<h2>Parity at each size set</h2>", _table(["sizes", "inputs", "max abs err", ""], rows)]
    return parts


def _inputs_section(report: dict) -> list[str]:
    """Parity on the user's ``--sample`` and the ranges integer inputs were drawn from."""
    parts = []
    sample = report["parity"].get("samples")
    if sample:
        rows = []
        for stage, comps in sample.get("stages", {}).items():
            for c in comps:
                ok = '<span class="pass">ok</span>' if c["passed"] else '<span class="fail">FAIL</span>'
                rows.append([stage, html.escape(c["name"]), _fmt(c["max_abs_err"]), _fmt(c["max_rel_err"]), ok])
        rows += [["", "", "", "", f'<span class="fail">{html.escape(p)}</span>'] for p in sample.get("problems", [])]
        shapes = ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in sample.get("inputs", {}).items())
        verdict = '<span class="pass">PASS</span>' if sample["passed"] else '<span class="fail">FAIL</span>'
        parts += [f"<h2>Parity on the sample <code>{html.escape(sample['file'])}</code> {verdict}</h2>",
                  f"<p>{html.escape(shapes)}</p>",
                  _table(["comparison", "output", "max abs err", "max rel err", ""], rows)]
    ranges = report.get("input_ranges")
    if ranges:
        parts += ["<h2>Integer inputs</h2>",
                  _table(["input", "values drawn from", "why"],
                         [[f"<code>{html.escape(k)}</code>", f"[{v['range'][0]}, {v['range'][1]})",
                           html.escape(v["from"])] for k, v in ranges.items()])]
    return parts


def _exports_section(rows: list[dict]) -> list[str]:
    """One row per ``--export``: its file, what ran it, its tolerance and its error against the source."""
    if not rows:
        return []
    out = []
    for r in rows:
        head = [f"<code>{html.escape(r['export'])}</code>", f"<code>{html.escape(r['file'])}</code>"]
        if r.get("skipped") or r.get("error"):
            out.append(head + ["&ndash;", "&ndash;", "&ndash;", "&ndash;",
                               f'<span class="fail">FAIL</span> {html.escape(r.get("skipped") or r["error"])}'])
            continue
        worst = max(r["outputs"], key=lambda c: c["max_abs_err"])
        ok = '<span class="pass">ok</span>' if r["passed"] else '<span class="fail">FAIL</span>'
        extra = f"<br>top-1 agreement {r['top1_agreement']:.3g}" if "top1_agreement" in r else ""
        for s in r.get("shapes", []):  # the artifact at parity's further sizes of the symbols
            at = html.escape(_sizes(s["sizes"]))
            extra += (f"<br>at {at}: refused ({html.escape(s['refused'])})" if s["passed"] is None else
                      f"<br>at {at}: {'ok' if s['passed'] else 'FAIL'}, max abs err {_fmt(s['max_abs_err'])}")
        out.append(head + [html.escape(r.get("checked_with", "")), html.escape(r["tolerance"]["rule"]),
                           _fmt(worst["max_abs_err"]), _fmt(worst["max_rel_err"]), ok + extra])
    return ["<h2>Exported artifacts</h2>",
            _table(["export", "file", "run with", "tolerance", "max abs err", "max rel err", ""], out)]




def _gradients_section(report: dict) -> list[str]:
    """Gradient parity (``--gradients``, pipeline/gradients.py) and the report's notes."""
    parts = []
    grad = report.get("gradients") or {}
    if grad.get("ran"):
        verdict = '<span class="pass">match</span>' if grad["passed"] else '<span class="fail">differ</span>'
        rows = []
        for kind, entries in (("input", grad["inputs"]), ("weight", grad["weights"])):
            for r in entries:
                ok = '<span class="pass">ok</span>' if r["passed"] else '<span class="fail">FAIL</span>'
                conv = ", ".join(f"<code>{html.escape(c)}</code>" for c in r.get("converted", []))
                rows.append([kind, f"<code>{html.escape(r['name'])}</code>", conv or "&ndash;",
                             _fmt(r.get("max_abs_err", "?")), _fmt(r.get("max_rel_err", "?")), ok])
        unmapped = grad["unmapped"]
        parts += [f"<h2>Gradients: {verdict}</h2>",
                  f"<p>{html.escape(grad['function'])}; {html.escape(grad['rule'])}. A mismatch does not fail parity.</p>",
                  _table(["", "source", "converted", "max abs err", "max rel err", ""], rows)]
        if unmapped["source"] or unmapped["converted"]:
            parts.append("<p>unmapped (no unique weight of equal values): source "
                         + html.escape(", ".join(unmapped["source"]) or "none") + "; converted "
                         + html.escape(", ".join(unmapped["converted"]) or "none") + "</p>")
    elif grad.get("error"):
        parts += ["<h2>Gradients</h2>", f"<p class='fail'>the check raised {html.escape(grad['error'])}</p>"]
    if report.get("notes"):
        parts += ["<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>"]
    return parts


def write(report: dict, path: Path) -> None:
    par = report["parity"]
    verdict = '<span class="pass">PASS</span>' if par["passed"] else '<span class="fail">FAIL</span>'
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>pipeline report: "
             f"{html.escape(str(report.get('model')))}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(str(report.get('model')))}: {report['source']} &rarr; {report['target']} {verdict}</h1>",
             f"<p>tolerance: atol={par['atol']:g}, rtol={par['rtol']:g}; layout: {html.escape(report['layout'])}</p>",
             "<h2>Stages</h2>",
             _table(["stage", "seconds"], [[k, _fmt(v)] for k, v in report["timings_s"].items()]),
             "<h2>Parity</h2>"]
    rows = []
    for stage, comps in par["stages"].items():
        for c in comps:
            ok = '<span class="pass">ok</span>' if c["passed"] else '<span class="fail">FAIL</span>'
            rows.append([stage, html.escape(c["name"]), _fmt(c["max_abs_err"]), _fmt(c["max_rel_err"]), ok])
    parts.append(_table(["comparison", "output", "max abs err", "max rel err", ""], rows))
    parts += _shapes_section(report)
    parts += _inputs_section(report)
    parts += _exports_section(par.get("exports") or [])
    parts += _gradients_section(report)
    first = par.get("first_divergence")
    if first:
        at = f" at {html.escape(_sizes(first['sizes']))}" if first.get("sizes") else ""
        parts += [f"<h2>First divergence{at}</h2>",
                  f"<p>ONNX node <code>{html.escape(first['onnx_node'])}</code> ({html.escape(first['op_type'])}) "
                  f"= generated <code>{html.escape(first['target_layer'])}</code>: max abs err {_fmt(first['max_abs_err'])}, "
                  f"max rel err {_fmt(first['max_rel_err'])}</p>"]
    image = _plot(par.get("node_errors") or [])
    if image:
        parts += ["<h2>Error per node</h2>", f"<img alt='max abs error per node' src='data:image/png;base64,{image}'>"]
    parts += ["<h2>Normalize passes</h2>",
              _table(["pass", "changed", "nodes after", "seconds", "max abs err"],
                     [[html.escape(p["name"]), p["changed"], p["nodes_after"], _fmt(p["seconds"]),
                       _fmt(p["max_abs_err"]) if p["max_abs_err"] is not None else "&ndash;"] for p in report["passes"]]),
              "<h2>Files</h2><ul>" + "".join(f"<li><code>{html.escape(a)}</code></li>" for a in report["artifacts"]) + "</ul>",
              "</body></html>"]
    Path(path).write_text("\n".join(parts))
