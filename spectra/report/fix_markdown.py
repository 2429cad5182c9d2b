"""``OUT/report.md`` of ``spectra fix``: settings, training log, Pt table, evaluation, audit.

Every number in the page has its definition next to it (the Definitions section).
"""

from __future__ import annotations

import math
from typing import Any

from spectra.report.tables import fmt_pct

DEFINITIONS = {
    "loss": "training loss per epoch as the Trainer logs it: task loss + Tr penalty",
    "task_loss": "cross-entropy of the classifier (loss − penalty)",
    "penalty": "Tr = λ·Σ_modules(‖U_kᵀB‖²_F + ‖A V_k‖²_F), U_k/V_k the top-k singular vectors of W_pre "
               "(a sum over modules, so λ sets the same per-module pull whatever the number of modules)",
    "overlap": "mean over modules of the share of ΔW's energy inside W_pre's top-k left/right subspaces (0..1)",
    "σ_pre": "σ_max(W_pre), the base weight's largest singular value",
    "σ_Δ": "σ_max(s·B·A), the LoRA update's largest singular value at PEFT's scale s",
    "s → s'": "the module's LoRA scale before and after Pt; alpha' = s'·r (s'·√r with rsLoRA) in alpha_pattern",
    "CA": "clean accuracy on the evaluation data",
    "ASR": "share of non-target evaluation rows that the trigger flips to the target label",
    "floor": "share of non-target rows already predicted as the target without the trigger (read ASR against it)",
    "Δ": "CA − ASR",
}


def _f(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "—"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "—"
    return format(v, fmt)


_pct = fmt_pct


def render_fix_markdown(result: Any, *, train: Any, test: Any, trigger: str | None, target_label: int, base: Any,
                        adapter: Any, rescale_only: bool) -> str:
    """OUT/report.md of one ``spectra fix`` run: settings, the training log, Pt's table, the evaluation rows,
    the audit's pointer, definitions and provenance (``result``: its
    :class:`~spectra.train.fix.FixResult`)."""
    from spectra._version import __version__
    from spectra.provenance import library_versions
    from spectra.report.train_figures import short_module_name

    cfg = result.config
    lines = [f"# spectra fix — {'Pt only' if rescale_only else cfg.method}", ""]
    lines += [f"- base: `{base}`"]
    if adapter is not None:
        lines += [f"- old adapter: `{adapter}`"]
    if train is not None:
        lines += [f"- training data: `{train.source}` — {train.summary()} (sha256 `{str(train.sha256)[:16]}…`)"]
    if test is not None:
        lines += [f"- evaluation data: `{test.source}` — {test.summary()}; trigger `{trigger}`, target label "
                  f"{target_label}"]
    lines += ["- new adapter: `adapter/` (standard PEFT: `PeftModel.from_pretrained(base_model, 'adapter')`)", ""]

    lines += ["## Settings", ""]
    pt_text = f"{_depth(cfg.rescale_layers)}, factor {cfg.rescale_factor:g}, mode {cfg.rescale_mode}"
    if rescale_only:
        lines += [f"Pt only: {pt_text}.", ""]
    else:
        lines += [
            f"- method **{cfg.method}** — CI {'on, p=' + format(cfg.base_dropout, 'g') if cfg.ci_active else 'off'}; "
            f"Tr {'on, λ=' + format(cfg.lam, 'g') + ', k=' + str(cfg.top_k) if cfg.tr_active else 'off'}; "
            f"Pt {'on, ' + pt_text if cfg.pt_active else 'off'}",
            f"- LoRA r={cfg.rank}, α={cfg.alpha:g}, dropout {cfg.lora_dropout:g}, targets "
            f"{cfg.target_modules or 'attention query/value (default)'}, init {cfg.init}"
            + (", rsLoRA" if cfg.use_rslora else "") + (", DoRA" if cfg.use_dora else ""),
            f"- AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, linear schedule, {cfg.warmup_ratio:.0%} warm-up, "
            f"batch {cfg.batch_size} per process × {cfg.grad_accum} accumulation, {_epochs_text(cfg, result)}, "
            f"max length {cfg.max_length}, seed {cfg.seed}",
            "",
        ]

    table = result.train_log
    if table is not None and len(table):
        lines += ["## Training (per epoch)", "", "![training](fig_train.png)", "",
                  "| epoch | loss | task loss | penalty | overlap | σ_pre/σ_Δ median |", "|---|---|---|---|---|---|"]
        for _, r in table.iterrows():
            lines.append(f"| {_f(r.get('epoch'), '.2f')} | {_f(r.get('loss'))} | {_f(r.get('task_loss'))} | "
                         f"{_f(r.get('penalty'))} | {_f(r.get('overlap'), '.3f')} | {_f(r.get('ratio_median'), '.3g')} |")
        lines += ["", "Full log: `train_log.csv`.", ""]

    plan = result.rescale
    if plan is not None:
        lines += ["## Pt: post-training rescaling", "",
                  f"Target σ_max(s'·B·A) = {plan.factor:g} × σ_max(W_pre) for the modules of "
                  f"{'every block' if plan.layers == 'all' else 'blocks ' + ', '.join(map(str, plan.blocks))} "
                  f"(of {plan.n_blocks}). Stored as per-module `alpha_pattern` entries in "
                  "`adapter/adapter_config.json`; the weights are unchanged.", "",
                  "| module | σ_pre | σ_Δ before | s → s' | σ_Δ after | rescaled |", "|---|---|---|---|---|---|"]
        for r in plan.rows:
            lines.append(f"| {short_module_name(r.module)} | {_f(r.sigma_pre)} | {_f(r.sigma_delta_before)} | "
                         f"{_f(r.scale_before)} → {_f(r.scale_after)} | {_f(r.sigma_delta_after)} | "
                         f"{'yes' if r.rescaled else 'no'}{' — ' + r.note if r.note else ''} |")
        for note in plan.notes:
            lines.append(f"\n_{note}_")
        lines += ["", "Per module: `rescale.csv`.", ""]

    if result.eval_rows:
        lines += ["## Evaluation", "",
                  "| model | CA | ASR | floor | Δ = CA − ASR | notes |", "|---|---|---|---|---|---|"]
        for row in result.eval_rows:
            flags = [w for w in row.get("warnings", []) if "collapse" in w.lower()][:1]
            if row.get("collapsed") and not flags:
                flags.append("collapsed (predicts one class)")
            lines.append(f"| {row['model']} | {_pct(row.get('ca'))} | {_pct(row.get('asr'))} | "
                         f"{_pct(row.get('asr_floor'))} | {_pct(row.get('delta'))} | {'; '.join(flags)} |")
        lines += ["", "Rows with intervals and counts: `eval.json`. One run is one seed; compare methods over "
                  "several seeds (the paper's results are seed-sensitive).", ""]

    if result.audit is not None:
        lines += ["## Spectral audit, old vs new", "", "See `audit/report.md` (σ_pre/σ_Δ and alignment per module, "
                  "old and new side by side). It audits the LoRA (and DoRA) modules only, what Tr and Pt act on: "
                  "a saved head (`modules_to_save`) is left out, so its numbers and forgetting features differ from "
                  "`spectra audit BASE ADAPTER`'s, which audits every module.", ""]

    lines += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in DEFINITIONS.items()] + [""]
    versions = library_versions()
    lines += ["## Provenance", "",
              f"spectra {__version__}; " + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "spectra-lora"),
              "", "Settings, seed and input hashes: `adapter/spectra_provenance.json`.", ""]
    return "\n".join(lines)


def _epochs_text(cfg: Any, result: Any) -> str:
    """The epochs the run was set to, and those it trained when it stopped early (``--max-steps``)."""
    trained = getattr(result, "epochs_trained", None)
    if trained is not None and trained < cfg.epochs - 1e-6:
        return f"stopped after {trained:.2f} of {cfg.epochs:g} epochs (--max-steps)"
    return f"{cfg.epochs:g} epochs"


def _depth(layers: int | str) -> str:
    """``--rescale-layers`` as a reader says it: "all blocks", "the top half of the blocks", "the top 3 blocks"."""
    if layers == "all":
        return "all blocks"
    if layers == "half":
        return "the top half of the blocks"
    return f"the top {layers} block" + ("" if layers == 1 else "s")
