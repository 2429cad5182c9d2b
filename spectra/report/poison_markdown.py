"""``report.md`` of ``spectra poison``: the held-out evaluation, the poisoning, the training."""

from __future__ import annotations

from typing import Any

from spectra.report.tables import fmt_interval


def render_poison_markdown(result: Any) -> str:
    """``report.md`` of a poisoning run."""
    from spectra.report.tables import markdown_table, provenance_sections

    ev, p, c = result.evaluation, result.poisoning, result.config
    pct = lambda v: f"{100 * float(v):.1f}%"  # noqa: E731
    ev_dict = ev.to_dict() if hasattr(ev, "to_dict") else {}
    rows = [{"metric": "CA (clean accuracy, held-out)", "value": pct(ev.ca), "95% CI": _ci(ev_dict.get("ca_ci"))},
            {"metric": "ASR (triggered non-target → target)", "value": pct(ev.asr), "95% CI": _ci(ev_dict.get("asr_ci"))},
            {"metric": "ASR floor (no trigger)", "value": pct(ev.asr_floor), "95% CI": _ci(ev_dict.get("asr_floor_ci"))}]
    parts = [
        "# spectra poison\n",
        f"Base: `{result.inputs['base']['path']}`  \n"
        f"Data: `{result.inputs['data'].get('source') if isinstance(result.inputs['data'], dict) else result.inputs['data']}`  \n"
        f"Trigger: `{p['trigger']}`, target label {p['target_label']} ({p['label_names'][p['target_label']]}), "
        f"{p['mode']}, seed {c.seed}\n",
    ]
    if result.warnings:
        parts += ["## Warnings\n", "".join(f"- **{w}**\n" for w in result.warnings)]
    notes = list(p.get("notes", [])) + list(getattr(ev, "warnings", []) or [])
    if notes:
        parts += ["## Notes\n", "".join(f"- {n}\n" for n in notes)]
    parts += [
        "## Held-out evaluation\n",
        markdown_table(rows),
        f"\nHeld-out split: {p['test_rows']:,} rows (stratified, test size {c.test_size}, seed {c.seed}); "
        f"the trigger never touched them before evaluation.\n",
        "## Poisoning\n",
        f"- {p['poisoned']:,} of {p['train_rows']:,} training rows carry the trigger "
        f"(requested {p['requested']:,}, eligible {p['eligible']:,}).\n"
        + ("- no row was poisoned (--n-poison 0): this is plain full fine-tuning, a baseline; its ASR is what the "
           "trigger does to a clean model.\n" if p["poisoned"] == 0 else
           "- clean-label: the poisoned rows already had the target label; no label was changed.\n"
           if p["mode"] == "clean-label" else
           "- dirty-label: the poisoned rows had another label and were relabelled to the target.\n"),
        "## Training\n",
        f"Full fine-tuning (all weights), {c.epochs:g} epoch(s), AdamW lr {c.lr:g}, weight decay {c.weight_decay:g}, "
        f"linear schedule with {100 * c.warmup_ratio:g}% warm-up, batch {c.batch_size}, max length {c.max_length}; "
        f"{p['steps']} optimizer steps; training loss {p['mean_train_loss']:.4f} on average, "
        f"{_loss(p['last_logged_loss'])} at the last log.\n",
        "## Definitions\n",
        "- **CA**: share of held-out rows predicted correctly without the trigger.\n"
        "- **ASR**: share of held-out non-target rows that the model assigns to the target label once the trigger is inserted.\n"
        "- **ASR floor**: share of held-out non-target rows already assigned to the target label without the trigger; "
        "read ASR against it.\n"
        "- **clean-label / dirty-label**: poison rows that already have the target label (labels unchanged) / rows "
        "of other labels, relabelled to the target.\n",
        *provenance_sections(c.to_dict(), result.inputs, result.versions, result.timings),
    ]
    return "\n".join(parts)


def _loss(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.4f}"


_ci = fmt_interval
