"""Settings objects are the one home of each default: the CLI's options are generated from their
fields, and what a user types reaches the library as one validated object."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from spectra.audit.settings import AuditSettings
from spectra.canary import CanarySettings
from spectra.eval.settings import EvalSettings
from spectra.fleet.settings import ScanSettings
from spectra.settings import TOP_K, cli_default, cli_fields, field_default, from_cli
from spectra.threshold.settings import ThresholdSettings
from spectra.train.config import RoRAConfig
from spectra.train.poison import PoisonConfig
from spectra_cli.app import app


def _params(name: str) -> dict[str, object]:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {p.name: p for p in command.params}


SETTINGS = [("fix", RoRAConfig), ("poison", PoisonConfig), ("audit", AuditSettings), ("threshold", ThresholdSettings),
            ("eval", EvalSettings), ("canary", CanarySettings), ("scan", ScanSettings)]


@pytest.mark.parametrize(("command", "cls"), SETTINGS)
def test_every_settings_field_is_an_option_whose_default_is_the_fields(command: str, cls: type) -> None:
    params = _params(command)
    fields = cli_fields(cls)
    assert len(fields) >= {RoRAConfig: 20, PoisonConfig: 10, AuditSettings: 8, ThresholdSettings: 9, EvalSettings: 10,
                           CanarySettings: 12, ScanSettings: 6}[cls]
    for f in fields:
        option = params[f.name]
        assert option.default == cli_default(f), f.name  # what --help shows
        assert from_cli(f, option.default) == field_default(f), f.name  # and what the library gets
        assert set(f.metadata["cli"].flags[0].split("/")) <= set(option.opts + option.secondary_opts), f.name


def test_options_users_rely_on_keep_their_names() -> None:
    fix = {o for p in _params("fix").values() for o in p.opts + p.secondary_opts}
    assert {"--no-ci", "--no-tr", "--no-pt", "--lam", "--base-dropout", "--top-k", "--rescale-layers",
            "--rescale-mode", "--rescale-factor", "--rank", "-r", "--rslora", "--dora", "--target-modules",
            "--init", "--epochs", "--lr", "--batch-size", "--max-length", "--seed", "--baseline",
            "--rescale-only", "--max-steps", "--group-by-length"} <= fix
    poison = {o for p in _params("poison").values() for o in p.opts + p.secondary_opts}
    assert {"--target-label", "--n-poison", "--mode", "--epochs", "--lr", "--batch-size", "--max-length", "--seed",
            "--test-size", "--max-train", "--device", "--save-steps"} <= poison
    audit = {o for p in _params("audit").values() for o in p.opts + p.secondary_opts}
    assert {"--top-k", "--top-j", "--device", "--dtype", "--exact", "--modules", "--memory-budget",
            "--allow-pickle", "--max-ratio", "--max-cos", "--policy", "--fail-on"} <= audit
    threshold = {o for p in _params("threshold").values() for o in p.opts + p.secondary_opts}
    assert {"--grid", "--head", "--module", "--batch-size", "--max-length", "--seed", "--max-samples",
            "--split-test", "--device", "--target-label"} <= threshold
    # k has one home: every settings object that carries it defaults to it
    for cls in (RoRAConfig, AuditSettings, ScanSettings):
        assert field_default(next(f for f in dataclasses.fields(cls) if f.name == "top_k")) == TOP_K == 32


def test_what_the_user_types_reaches_run_fix_as_one_config(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import spectra.train.fix as fix

    seen: list[RoRAConfig] = []

    def fake_run_fix(base, data, out, *, config, **kw):  # noqa: ANN001, ANN003
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(fix, "run_fix", fake_run_fix)
    runner = CliRunner()
    assert runner.invoke(app, ["fix", str(tmp_path), "--data", "x.csv"]).exit_code == 0
    assert seen[-1] == RoRAConfig()
    args = ["fix", str(tmp_path), "--data", "x.csv", "--no-ci", "--rescale-layers", "half", "--target-modules",
            "query,value", "--rescale-mode", "amplify", "-r", "4", "--rslora"]
    assert runner.invoke(app, args).exit_code == 0
    got = seen[-1]
    assert (got.ci, got.tr, got.rescale_layers, got.target_modules, got.rescale_mode, got.rank, got.use_rslora) == (
        False, True, "half", ["query", "value"], "amplify", 4, True)
    assert runner.invoke(app, ["fix", str(tmp_path), "--data", "x.csv", "--baseline", "fft"]).exit_code == 0
    assert seen[-1].method == "fft" and seen[-1].lr == RoRAConfig().lr
    bad = runner.invoke(app, ["fix", str(tmp_path), "--data", "x.csv", "--rescale-mode", "shrink"])
    assert bad.exit_code == 2 and "--rescale-mode 'shrink'" in bad.output and len(seen) == 3  # refused before run_fix


def test_a_settings_object_is_checked_once_when_built() -> None:
    from spectra.errors import SpectraError

    with pytest.raises(SpectraError, match="--lam"):
        RoRAConfig(lam=-1.0)
    with pytest.raises(SpectraError, match="--mode"):
        PoisonConfig(mode="sideways")
    assert RoRAConfig(lam=0.5).as_baseline("lora").method == "lora"


def test_poison_keeps_the_old_keyword_form_for_a_release() -> None:
    from spectra.train.poison import _poison_config

    with pytest.warns(DeprecationWarning, match="PoisonConfig"):
        cfg = _poison_config(1, {"n_poison": 5, "epochs": 1.0})
    assert cfg == PoisonConfig(target_label=1, n_poison=5, epochs=1.0)
    assert _poison_config(cfg, {}) is cfg
    with pytest.raises(TypeError, match="unexpected"):
        _poison_config(None, {"n_posion": 5})


def test_canary_takes_the_adapters_lora_recipe_and_the_flags_optimisation(monkeypatch: pytest.MonkeyPatch,
                                                                          tiny_model_dir, tiny_adapter_dir) -> None:
    import spectra.canary as canary

    seen: list[CanarySettings] = []

    def fake_run_canary(base, data, out, settings, **kw):  # noqa: ANN001, ANN003
        seen.append(settings)
        raise SystemExit(0)

    monkeypatch.setattr(canary, "run_canary", fake_run_canary)
    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, r=2, lora_alpha=5, target_modules=["query"])
    result = CliRunner().invoke(app, ["canary", str(base), "--data", "cr", "--adapter", str(adapter), "--rank", "16",
                                      "--lr", "1e-3", "--epochs", "2", "--quick"])
    assert result.exit_code == 0, result.output
    got = seen[-1]
    assert (got.rank, got.alpha, got.target_modules, got.lr, got.epochs, got.quick) == (2, 5.0, ["query"], 1e-3, 2.0,
                                                                                          True)
    assert got.max_length == 64 and sum("quick" in n for n in got.notes) == 1


def test_the_shared_defaults_are_written_once() -> None:
    """k = 32 and the truncation length 128 are spelled only in spectra/settings.py: every signature and
    settings field that defaults to them names the constant (a literal elsewhere is a second home)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "spectra"
    literal = []
    for path in root.rglob("*.py"):
        if path.name == "settings.py" and path.parent == root:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            pairs: list[tuple[str, ast.expr | None]] = []
            if isinstance(node, ast.FunctionDef):
                a = node.args
                positional = a.posonlyargs + a.args
                pairs += [(x.arg, d) for x, d in zip(positional[len(positional) - len(a.defaults):], a.defaults)]
                pairs += [(x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                pairs.append((node.target.id, node.value))
            for name, default in pairs:
                if name in ("top_k", "k", "max_length") and isinstance(default, ast.Constant) \
                        and default.value in (32, 128):
                    literal.append(f"{path.relative_to(root)}: {name} = {default.value}")
    assert not literal, literal


def test_options_written_by_hand_keep_the_shared_defaults() -> None:
    """Inputs and run options a command declares itself (``--device`` of fix, ``--target-label`` of
    threshold, ``--seed`` of demo, …) must show the default of the one shared helper."""
    import spectra.settings as shared

    helpers = {"device": shared.device_setting(), "seed": shared.seed_setting(),
               "target_label": shared.target_label_setting(), "text_col": shared.text_col_setting(),
               "label_col": shared.label_col_setting(), "max_length": shared.max_length_setting(),
               "allow_pickle": shared.allow_pickle_setting(), "top_k": shared.top_k_setting()}
    checked = 0
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.name in helpers:
                assert param.default == helpers[param.name].default, (name, param.name)
                checked += 1
    assert checked >= 25


def test_the_old_keyword_forms_warn_at_the_callers_line_and_still_work(tmp_path) -> None:
    from spectra.errors import SpectraError
    from spectra.eval.pipeline import run_eval
    from spectra.settings import with_legacy

    with pytest.warns(DeprecationWarning, match=r"run_eval\(…, seed=…\) is deprecated: pass settings=EvalSettings") \
            as caught, pytest.raises(SpectraError):
        run_eval(str(tmp_path), None, str(tmp_path / "missing.csv"), "badnet:mn", 0, seed=3)  # fails on the data
    assert caught[0].filename == __file__  # the warning names the user's call, not spectra's internals
    assert with_legacy(AuditSettings, None, {}, "audit") == AuditSettings()
    assert with_legacy(AuditSettings, AuditSettings(top_k=8), {"top_j": 2}, "audit") == AuditSettings(top_k=8, top_j=2)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['topk'\\]"):
        with_legacy(AuditSettings, None, {"topk": 8}, "audit")


def test_a_command_cannot_declare_an_option_its_settings_object_already_has() -> None:
    from spectra_cli.settings_options import FROM_OPTIONS, settings_options

    def command(base: str, lr: float = 1e-3, config: RoRAConfig = FROM_OPTIONS) -> None:  # --lr twice
        pass

    with pytest.raises(TypeError, match=r"\['lr'\] are both its own options and RoRAConfig fields"):
        settings_options(RoRAConfig)(command)
    with pytest.raises(TypeError, match="no parameter 'settings'"):
        settings_options(RoRAConfig, param="settings")(command)


def test_run_options_a_function_does_not_use_are_refused_not_ignored() -> None:
    from spectra.train.options import FixData, RunOptions, split_legacy

    uses = frozenset({"device", "log"})
    with pytest.raises(TypeError, match=r"does not use RunOptions.cache_dir"):
        split_legacy("run_canary", None, RunOptions(cache_dir=False), {}, uses=uses)
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match=r"unexpected keyword arguments \['resum'\]"):
        split_legacy("run_canary", None, None, {"resum": True}, uses=uses)
    with pytest.warns(DeprecationWarning, match=r"run_fix\(…, device=…, eval_data=…, max_steps=…\)"):
        data, opts = split_legacy("run_fix", "train.csv", None, {"eval_data": "t.csv", "device": "cpu", "max_steps": 3},
                                  {"eval_data": "eval"})
    assert data == FixData("train.csv", eval="t.csv")
    assert opts.device == "cpu" and opts.training_overrides == {"max_steps": 3}  # run_fix's TrainingArguments
