"""Render the results tables of README.md and docs/ from the CSVs under benchmarks/results/.

Every measured figure quoted in the documentation comes from one CSV through one renderer
here, so the README and the docs cannot disagree with each other or with the data. A table
lives in a Markdown file between two markers::

    <!-- table: tp_mace -->
    | ... rendered rows ... |
    <!-- /table -->

Usage (from the repository root)::

    python benchmarks/render_tables.py           # rewrite every table in README.md and docs/*.md
    python benchmarks/render_tables.py --check   # exit 1 and name the tables that differ

``tests/test_docs_tables.py`` runs the check, so a CSV refreshed by a benchmark run without
re-rendering the docs fails the tests.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"(<!-- table: (?P<name>[a-z0-9_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def read(name: str) -> list[dict[str, str]]:
    with open(RESULTS / name, newline="") as handle:
        return list(csv.DictReader(handle))


def markdown(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub table; ``align`` is one character per column, ``l`` or ``r`` (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)


def ms(value: float) -> str:
    return f"{value:.1f}"


def ratio(value: float) -> str:
    return f"{value:.2f}x"


# --- tensor products -----------------------------------------------------------------------


def tp_mace() -> str:
    rows = [r for r in read("microbench_mace.csv") if r["status"] == "ok"]
    by = {(r["backend"], r["pass"]): float(r["median_ms"]) for r in rows}
    diff = {r["pass"]: r["max_abs_diff_vs_cg"] for r in rows if r["backend"] == "e3nn"}
    body = [
        [label, ms(by["cg", p]), ms(by["e3nn", p]), ratio(by["e3nn", p] / by["cg", p]), diff[p]]
        for p, label in (("fwd", "forward"), ("fwdbwd", "forward + backward (x1, x2, w)"))
    ]
    return markdown(["pass", "cg (ms)", "e3nn (ms)", "cg speed-up", "max abs diff"], body)


def tp_selfprod() -> str:
    rows = [r for r in read("microbench_selfprod.csv") if r["status"] == "ok"]
    by = {(r["backend"], r["pass"]): float(r["median_ms"]) for r in rows}
    body = [
        [label, ms(by["cg", p]), ms(by["e3nn", p]), ratio(by["e3nn", p] / by["cg", p])]
        for p, label in (("fwd", "forward"), ("fwdbwd", "forward + backward"))
    ]
    return markdown(["pass", "cg (ms)", "e3nn (ms)", "cg speed-up"], body)


def tp_mimo_all_backends() -> str:
    rows = [r for r in read("mimo_all_backends/microbench_mimo.csv") if r["status"] == "ok"]
    by = {(int(r["L"]), r["backend"]): float(r["median_ms"]) for r in rows}
    body = []
    for L in sorted({L for L, _ in by}):
        cg, e3, grid, fft = (by[L, b] for b in ("cg", "e3nn", "gaunt_grid", "gaunt_fft"))
        body.append(
            [str(L), ms(cg), ms(e3), ms(grid), ms(fft), ratio(e3 / cg), ratio(cg / grid), f"{fft / grid:.2f}"]
        )
    header = ["L", "cg (ms)", "e3nn (ms)", "gaunt_grid (ms)", "gaunt_fft (ms)", "cg vs e3nn", "grid vs cg", "fft / grid"]
    return markdown(header, body)


def vsh_speed() -> str:
    rows = [r for r in read("vsh_speed.csv") if r["status"] == "ok"]
    by = {(int(r["L"]), r["backend"]): float(r["median_ms"]) for r in rows}
    body = []
    for L in sorted({L for L, _ in by}):
        vsh, cg, grid, e3 = (by.get((L, b)) for b in ("vsh", "cg", "gaunt_grid", "e3nn"))
        body.append([str(L), ms(vsh), ms(cg), ms(grid), ms(e3), f"{vsh / cg:.2f}"])
    return markdown(["L", "vsh (ms)", "cg (ms)", "gaunt_grid (ms)", "e3nn (ms)", "vsh / cg"], body)


def linear() -> str:
    rows = read("linear.csv")
    body = []
    for irreps in dict.fromkeys(r["irreps"] for r in rows):
        for p in ("fwd", "fwdbwd"):
            group = [r for r in rows if r["irreps"] == irreps and r["pass"] == p]
            e3nn = next(float(r["median_ms"]) for r in group if r["impl"] == "e3nn")
            ours = next(r for r in group if r["default"] == "True")
            body.append(
                [irreps, p, ours["impl"], ms(e3nn), ms(float(ours["median_ms"])), ratio(e3nn / float(ours["median_ms"]))]
            )
    return markdown(["irreps", "pass", "auto picks", "o3.Linear (ms)", "Linear (ms)", "speed-up"], body, "lllrrr")


def expressivity() -> str:
    rows = read("expressivity.csv")
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    degrees = sorted({int(r["L"]) for r in rows})
    by = {(r["backend"], int(r["L"])): r for r in rows}
    body = []
    for b in backends:
        cells = []
        for L in degrees:
            r = by.get((b, L))
            cells.append("-" if r is None else f"{r['dimension']}" + ("" if r["matches"] == "True" else " (!)"))
        body.append([b, *cells])
    return markdown(["backend", *(f"L={L}" for L in degrees)], body)


# --- Gaunt / CP ----------------------------------------------------------------------------


def gaunt_mimo() -> str:
    rows = [r for r in read("gaunt_speed.csv") if r["task"] == "MIMO"]
    by = {(int(r["threads"]), int(r["L"]), r["backend"]): float(r["ms"]) for r in rows}
    body = []
    for threads in sorted({t for t, _, _ in by}, reverse=True):
        for L in sorted({L for t, L, _ in by if t == threads}):
            cg, grid, dft, fft = (by[threads, L, b] for b in ("cg", "gaunt_grid", "gaunt_fft", "gaunt_fft[fft]"))
            body.append(
                [str(L), str(threads), ms(cg), ms(grid), ms(dft), ms(fft), ratio(cg / grid),
                 f"{dft / grid:.2f}", f"{fft / grid:.2f}"]
            )  # fmt: skip
    header = ["L", "threads", "cg", "gaunt_grid", "gaunt_fft (dft)", "gaunt_fft[fft]", "grid vs cg", "dft / grid", "fft / grid"]
    return markdown(header, body)


def gaunt_cp() -> str:
    rows = [r for r in read("gaunt_speed.csv") if r["task"] != "MIMO"]
    by = {(int(r["threads"]), r["weights"], r["backend"]): float(r["ms"]) for r in rows}
    body = []
    for threads in sorted({t for t, _, _ in by}, reverse=True):
        for weights in ("shared", "per-sample"):
            cg, cp = by[threads, weights, "cg"], by[threads, weights, "cp"]
            body.append([str(threads), weights, ms(cg), ms(cp), ratio(cg / cp)])
    return markdown(["threads", "weights", "cg (ms)", "cp (ms)", "cp speed-up"], body, "llrrr")


def gaunt_l10() -> str:
    rows = [r for r in read("gaunt_L10/microbench_mimo.csv") if r["status"] == "ok"]
    grid = next(float(r["median_ms"]) for r in rows if r["backend"] == "gaunt_grid")
    body = [[r["backend"], ms(float(r["median_ms"])), f"{float(r['median_ms']) / grid:.2f}"] for r in rows]
    return markdown(["backend", "ms", "vs gaunt_grid"], body, "lrr")


def fft_lengths() -> str:
    rows = read("fft_lengths.csv")
    lengths = sorted({int(r["n"]) for r in rows})
    by = {(int(r["threads"]), int(r["n"])): r for r in rows}
    body = []
    for n in lengths:
        r = by.get((1, n))
        if r is not None:
            body.append([str(n), r["rfft_ns_per_element"], r["irfft_ns_per_element"]])
    return markdown(["length", "rfft ns/element", "irfft ns/element"], body)


def chunked_product() -> str:
    rows = read("chunked_product.csv")
    body = [
        [r["case"], r["backend"], r["threads"], r["batch"], ms(float(r["whole_ms"])), ms(float(r["chunked_ms"])),
         ratio(float(r["whole_ms"]) / float(r["chunked_ms"]))]
        for r in rows
    ]  # fmt: skip
    return markdown(["product", "backend", "threads", "batch", "whole batch (ms)", "chunked (ms)", "speed-up"], body, "llrrrrr")


# --- model ---------------------------------------------------------------------------------


def _model_pairs() -> list[tuple[dict, dict]]:
    rows = [r for r in read("model_step_vs_mace.csv") if not r["error"]]
    ours = [r for r in rows if r["impl"] == "equitensor"]
    pairs = []
    for r in ours:
        key = (r["system"], r["max_L"], r["dtype"])
        ref = next(m for m in rows if m["impl"] == "mace-torch" and (m["system"], m["max_L"], m["dtype"]) == key)
        pairs.append((r, ref))
    return pairs


def model_vs_mace() -> str:
    body = []
    for r, m in _model_pairs():
        train, ref_train = float(r["train_ms"]), float(m["train_ms"])
        infer, ref_infer = float(r["infer_ms"]), float(m["infer_ms"])
        body.append(
            [r["system"], r["dtype"], f"{r['atoms']} / {r['edges']}", ms(train), ms(ref_train), ratio(ref_train / train),
             ms(infer), ms(ref_infer), ratio(ref_infer / infer),
             f"{float(r['train_peak_mb']) / float(m['train_peak_mb']):.2f}"]
        )  # fmt: skip
    header = ["system", "dtype", "atoms / edges", "train (ms)", "mace-torch", "speed-up", "inference (ms)",
              "mace-torch", "speed-up", "train peak memory vs mace-torch"]  # fmt: skip
    return markdown(header, body, "lll" + "r" * 7)


def _neighbor_rows() -> list[dict[str, str]]:
    # the CSV ends with comment rows (numba compile times), which have no atom count
    return [r for r in read("neighbors.csv") if (r["n_atoms"] or "").isdigit()]


def neighbors() -> str:
    rows = _neighbor_rows()
    by = {(r["system"], r["method"]): r for r in rows}
    body = []
    for system in dict.fromkeys(r["system"] for r in rows):
        first = by[system, "equitensor"]
        times = {m: float(by[system, m]["median_ms"]) for m in ("equitensor", "matscipy", "ase")}
        body.append(
            [system, f"{int(first['n_atoms']):,}", f"{float(first['r_max']):g}", f"{int(first['n_edges']):,}",
             *(f"{times[m]:,.0f} ms" if times[m] >= 100 else f"{times[m]:.3g} ms" for m in ("equitensor", "matscipy", "ase")),
             f"{times['equitensor'] / times['matscipy']:.2f}"]
        )  # fmt: skip
    header = ["system", "atoms", "r_max (Å)", "edges", "equitensor", "matscipy", "ASE", "equitensor / matscipy"]
    return markdown(header, body)


def train_budget() -> str:
    rows = read("train_budget.csv")
    body = [
        [r["code"], f"{float(r['minutes']):g}", r["steps"], f"{1e3 * float(r['energy_per_atom_mae']):.1f}",
         f"{1e3 * float(r['forces_mae']):.1f}", f"{1e3 * float(r['forces_rmse']):.1f}"]
        for r in rows
    ]  # fmt: skip
    header = ["code", "minutes", "steps", "E/atom MAE (meV)", "F MAE (meV/Å)", "F RMSE (meV/Å)"]
    return markdown(header, body)


# --- data loading and mace-torch models ---------------------------------------------------


def data_throughput() -> str:
    rows = read("data_throughput.csv")
    by = {(r["library"], int(r["workers"])): float(r["graphs_per_s"]) for r in rows}
    body = [
        [str(w), f"{by['equitensor', w]:.0f}", f"{by['fairchem', w]:.0f}", ratio(by["equitensor", w] / by["fairchem", w])]
        for w in sorted({w for _, w in by})
    ]
    return markdown(["workers", "equitensor (graphs/s)", "fairchem-core (graphs/s)", "equitensor / fairchem"], body)


def data_rss() -> str:
    rows = read("data_rss.csv")
    header = ["frames", *(f"{int(r['frames']):,}" for r in rows)]
    return markdown(header, [["peak RSS (MiB)", *(f"{float(r['peak_rss_mib']):.0f}" for r in rows)]])


def data_batching() -> str:
    body = []
    for r in read("data_batching.csv"):
        spread = "" if r["rank_spread_max"] == "nan" else f"{float(r['rank_spread_max']):.3f}"
        body.append(
            [f"`{r['batching']}`", f"{int(r['atoms_min']):,}-{int(r['atoms_max']):,}", ratio(float(r["max_over_min"])), spread]
        )
    return markdown(["batching", "atoms per batch (min-max)", "max / min", "ranks' atom counts, largest ratio"], body)


def batch_memory() -> str:
    groups: dict[str, list[dict[str, str]]] = {}
    for r in read("batch_memory.csv"):
        if r["last"] != "True":  # the epoch's remainder batch is not a full batch
            groups.setdefault(r["batching"], []).append(r)

    def spread(rows, key, form):
        values = [float(r[key]) for r in rows]
        return f"{form(min(values))}-{form(max(values))}", ratio(max(values) / min(values))

    body = []
    for name, rows in groups.items():
        atoms, _ = spread(rows, "atoms", lambda v: f"{v:,.0f}")
        edges, _ = spread(rows, "edges", lambda v: f"{v:,.0f}")
        saved, saved_ratio = spread(rows, "saved_mib", lambda v: f"{v:.0f}")
        peak, peak_ratio = spread(rows, "peak_mib", lambda v: f"{v:.0f}")
        body.append([f"`{name}`", str(len(rows)), atoms, edges, saved, saved_ratio, peak, peak_ratio])
    header = ["batching", "batches", "atoms", "edges", "saved for backward (MiB)", "max / min", "step peak (MiB)", "max / min"]
    return markdown(header, body)


def mace_calculator_speed() -> str:
    body = [
        [r["dtype"], f"{float(r['mace_torch_ms']):.0f} ms", f"{float(r['equitensor_ms']):.0f} ms",
         ratio(float(r["mace_torch_ms"]) / float(r["equitensor_ms"])), f"{float(r['max_abs_force_diff_eV_per_A']):.1e} eV/Å"]
        for r in read("mace_calculator_speed.csv")
    ]  # fmt: skip
    header = ["dtype", "mace-torch `MACECalculator`", "`EquitensorCalculator`", "speed-up", "max abs force difference"]
    return markdown(header, body, "lrrrr")


def compile_speed() -> str:
    body = [
        [f"`{r['combo']}` {r['task']}", r["atoms"], r["threads"], f"{float(r['eager_ms']):.1f}",
         f"{float(r['compiled_ms']):.1f}", ratio(float(r["speedup"])), f"{float(r['kernel_share']):.0%}",
         ratio(float(r["bound"])), f"{float(r['compile_s']):.0f} s"]
        for r in read("compile_speed.csv")
    ]  # fmt: skip
    header = ["model, call", "atoms", "threads", "eager (ms)", "compiled (ms)", "speed-up", "kernels + GEMMs",
              "bound", "compile time (cold)"]  # fmt: skip
    return markdown(header, body, "lrrrrrrrr")


# --- the headline table (README and docs/benchmarks.md) ------------------------------------


def _range(values: list[float]) -> str:
    low, high = min(values), max(values)
    return ratio(low) if math.isclose(low, high, rel_tol=5e-3) else f"{low:.2f}-{high:.2f}x"


def headline() -> str:
    mace = {(r["backend"], r["pass"]): float(r["median_ms"]) for r in read("microbench_mace.csv")}
    gaunt = {(int(r["threads"]), int(r["L"]), r["backend"]): float(r["ms"]) for r in read("gaunt_speed.csv") if r["task"] == "MIMO"}
    cp = {(int(r["threads"]), r["weights"], r["backend"]): float(r["ms"]) for r in read("gaunt_speed.csv") if r["task"] != "MIMO"}
    threads = sorted({t for t, _, _ in gaunt})
    grid_vs_cg = [gaunt[t, 8, "cg"] / gaunt[t, 8, "gaunt_grid"] for t in threads]
    fft_vs_grid = [gaunt[t, L, "gaunt_fft[fft]"] / gaunt[t, L, "gaunt_grid"] for t in threads for L in (6, 8)]
    cp_vs_cg = [cp[t, w, "cg"] / cp[t, w, "cp"] for t in threads for w in ("shared", "per-sample")]
    pairs = _model_pairs()
    train = [float(m["train_ms"]) / float(r["train_ms"]) for r, m in pairs]
    memory = [float(r["train_peak_mb"]) / float(m["train_peak_mb"]) for r, m in pairs]
    lin = read("linear.csv")
    linear_ratios = [
        float(next(x for x in lin if x["irreps"] == r["irreps"] and x["pass"] == "fwdbwd" and x["impl"] == "e3nn")["median_ms"])
        / float(r["median_ms"])
        for r in lin if r["pass"] == "fwdbwd" and r["default"] == "True"
    ]  # fmt: skip
    largest = max(int(r["n_atoms"]) for r in _neighbor_rows())
    nb = {r["method"]: float(r["median_ms"]) for r in _neighbor_rows() if int(r["n_atoms"]) == largest}
    budget = {r["code"]: 1e3 * float(r["forces_mae"]) for r in read("train_budget.csv")}
    rows = [
        ["`cg` vs `e3nn`, MACE convolution, 10^4 edges, fp32, fwd+bwd",
         f"{ratio(mace['e3nn', 'fwdbwd'] / mace['cg', 'fwdbwd'])} faster (fwd {ratio(mace['e3nn', 'fwd'] / mace['cg', 'fwd'])})",
         "`docs/benchmarks_tp.md`"],
        ["`Linear` vs `o3.Linear`, 128 channels, 10^4 samples, fwd+bwd", f"{_range(linear_ratios)} faster",
         "`docs/benchmarks_tp.md`"],
        ["`gaunt_grid` vs `cg`, MIMO L = 8, batch 10^4, fwd+bwd", f"{_range(grid_vs_cg)} faster (1 and 2 threads)",
         "`docs/benchmarks_gaunt.md`"],
        ["`gaunt_fft` (`method=\"fft\"`) / `gaunt_grid`, L = 6 and 8", f"{_range(fft_vs_grid)} the time",
         "`docs/benchmarks_gaunt.md`"],
        ["`cp` vs `cg`, L = 4, 32 channels", f"{_range(cp_vs_cg)} faster", "`docs/benchmarks_gaunt.md`"],
        ["MACE training step vs mace-torch 0.3.16 (cg/cg, max_L 1, 1 thread, fp32 and fp64)",
         f"{_range(train)} faster, {min(memory):.2f}-{max(memory):.2f}x the peak memory", "`docs/benchmarks_model.md`"],
        [f"neighbour list, {largest:,} Cu atoms",
         f"{nb['equitensor']:.0f} ms vs matscipy {nb['matscipy']:.0f} ms, ASE {nb['ase'] / 1e3:.1f} s", "`docs/datasets.md`"],
        ["ethanol, 5 min training budget, test force MAE",
         f"{budget['equitensor']:.1f} vs mace-torch {budget['mace-torch']:.1f} meV/Å", "`docs/benchmarks_train.md`"],
    ]  # fmt: skip
    return markdown(["what", "result", "details"], rows, "lll")


RENDERERS: dict[str, Callable[[], str]] = {
    f.__name__: f
    for f in (
        tp_mace, tp_selfprod, tp_mimo_all_backends, vsh_speed, linear, expressivity, gaunt_mimo, gaunt_cp, gaunt_l10,
        fft_lengths, chunked_product, model_vs_mace, neighbors, train_budget, data_throughput, data_rss,
        data_batching, batch_memory, mace_calculator_speed, compile_speed, headline,
    )
}  # fmt: skip


def render(text: str, source: Path) -> str:
    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in RENDERERS:
            raise SystemExit(f"{source}: unknown table {name!r}; known: {', '.join(RENDERERS)}")
        return match[1] + RENDERERS[name]() + match[4]

    return MARKER.sub(replace, text)


def write_atomically(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise


def stale_tables(documents=DOCUMENTS) -> list[str]:
    """``file: table`` for every table whose text differs from its rendering."""
    stale = []
    for path in documents:
        text = path.read_text()
        for match in MARKER.finditer(text):
            if match["name"] not in RENDERERS or RENDERERS[match["name"]]() != match["body"]:
                stale.append(f"{path.relative_to(ROOT)}: {match['name']}")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report tables that differ from the CSVs; write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_tables()
        for line in stale:
            print(f"stale: {line} (run python benchmarks/render_tables.py)")
        return 1 if stale else 0
    for path in DOCUMENTS:
        text = path.read_text()
        rendered = render(text, path)
        if rendered != text:
            write_atomically(path, rendered)
            print(f"rendered {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
