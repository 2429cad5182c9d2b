"""spectra scan: a fleet from folders and manifests, a hostile adapter as an error row, resume
without auditing anything twice, strict outputs, and the Ray path (skipped without Ray)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spectra_cli.app import app

pytest.importorskip("pyarrow", reason="spectra scan writes Parquet (pyarrow, in the dev and fleet extras)")


@pytest.fixture
def fleet(tiny_model_dir, tiny_adapter_dir, tmp_path) -> tuple[Path, Path]:
    base = tiny_model_dir("bert")
    tree = tmp_path / "adapters"
    for i in range(5):
        ad = tiny_adapter_dir(base, name=f"a{i}", seed=10 + i, target_modules=["query", "value"])
        shutil.move(str(ad), tree / "team" / f"a{i}")
    shutil.copytree(tree / "team" / "a0", tree / "copy-of-a0")  # identical bytes: audited once
    bad = tree / "hostile"
    shutil.copytree(tree / "team" / "a1", bad)
    (bad / "adapter_model.safetensors").write_bytes(b"\xff" * 64)  # corrupt weights
    other = tiny_model_dir("bert", seed=3, name="wide")  # (the same shapes, so make a mismatch by hand)
    mismatch = tree / "mismatch"
    shutil.copytree(tree / "team" / "a2", mismatch)
    cfg = json.loads((mismatch / "adapter_config.json").read_text())
    (mismatch / "adapter_config.json").write_text(json.dumps({**cfg, "r": 3}))  # rank 3 in the config, 8 in weights
    del other
    return base, tree


def run(*args: object) -> object:
    return CliRunner().invoke(app, ["scan", *map(str, args)])


def adapters_table(out: Path) -> list[dict]:
    from spectra.fleet.store import read_rows

    return read_rows(out, "adapters")


def test_a_fleet_from_a_folder_tree_keeps_going_past_bad_adapters(fleet, tmp_path) -> None:
    base, tree = fleet
    res = run(tree, "--base", base, "--engine", "local", "--top-k", "4", "-o", tmp_path / "scan")
    # the scan goes on past them, and the gate does not pass over adapters it could not audit
    assert res.exit_code == 1, res.output
    rows = {r["id"]: r for r in adapters_table(tmp_path / "scan")}
    assert len(rows) == 8
    assert rows["hostile"]["status"] == "error" and "safetensors" in rows["hostile"]["error"]
    assert rows["mismatch"]["status"] == "error" and "rank" in rows["mismatch"]["error"]
    pair = {rows["copy-of-a0"]["duplicate_of"], rows["team/a0"]["duplicate_of"]}  # whichever came first is audited
    assert pair in ({None, "team/a0"}, {None, "copy-of-a0"}) and \
        rows["copy-of-a0"]["ratio_min"] == rows["team/a0"]["ratio_min"]
    assert all(rows[f"team/a{i}"]["status"] == "ok" and rows[f"team/a{i}"]["modules"] == 4 for i in range(5))
    # a tiny 2-layer BERT is not the evidence's architecture: the verdict says so, per adapter
    assert rows["team/a0"]["forgetting_evidence"] == "none"
    import pyarrow.parquet as pq

    modules = pq.read_table(tmp_path / "scan" / "modules").to_pylist()
    assert Counter(m["adapter"] for m in modules)["team/a3"] == 4
    sarif = json.loads((tmp_path / "scan" / "fleet.sarif").read_text(),
                       parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert sarif["version"] == "2.1.0"
    assert "2 error rows" in (tmp_path / "scan" / "report.md").read_text()


def test_interrupted_and_resumed_it_audits_each_adapter_exactly_once(fleet, tmp_path, monkeypatch) -> None:
    base, tree = fleet
    import spectra.fleet.engine as engine

    calls: list[str] = []
    real = engine.BaseAuditor.audit

    def counted(self, item_id, adapter, revision=None):  # noqa: ANN001, ANN202
        calls.append(item_id)
        return real(self, item_id, adapter, revision)

    monkeypatch.setattr(engine.BaseAuditor, "audit", counted)
    first = run(tree, "--base", base, "--engine", "local", "--top-k", "4", "--max-errors", "0", "-o", tmp_path / "s")
    assert first.exit_code == 2 and "--max-errors" in first.output  # stopped at the first error row
    kept = {r["id"] for r in adapters_table(tmp_path / "s")}
    assert kept and len(kept) < 8
    again = run(tree, "--base", base, "--engine", "local", "--top-k", "4", "--resume", "-o", tmp_path / "s")
    assert again.exit_code == 1, again.output  # the two bad adapters are 'unaudited' findings
    rows = adapters_table(tmp_path / "s")
    assert len(rows) == 8 and Counter(calls).most_common(1)[0][1] == 1  # nobody audited twice
    assert run(tree, "--base", base, "-o", tmp_path / "s").exit_code == 2  # no silent overwrite
    # --overwrite never deletes an input, whatever -o names
    gone = run(tree, "--base", base, "--engine", "local", "--overwrite", "-o", tree)
    assert gone.exit_code == 2 and "input" in gone.output and (tree / "team" / "a0").is_dir()


def test_a_manifest_names_ids_and_bases(fleet, tmp_path) -> None:
    base, tree = fleet
    orphan = tmp_path / "orphan"
    shutil.copytree(tree / "team" / "a4", orphan)
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    cfg.pop("base_model_name_or_path", None)
    (orphan / "adapter_config.json").write_text(json.dumps(cfg))
    manifest = tmp_path / "fleet.csv"
    manifest.write_text("id,adapter,base\n"
                        f"alpha,{tree / 'team' / 'a3'},{base}\n"
                        f"beta,{tree / 'team' / 'a4'},\n"
                        f"gamma,{orphan},\n")
    res = run(manifest, "--engine", "local", "--top-k", "4", "-o", tmp_path / "m")
    assert res.exit_code == 1, res.output  # gamma could not be audited: a finding
    rows = {r["id"]: r for r in adapters_table(tmp_path / "m")}
    assert rows["alpha"]["status"] == "ok"
    # beta names no base: its adapter_config.json's base_model_name_or_path (the base it was saved from)
    assert rows["beta"]["status"] == "ok" and Path(rows["beta"]["base"]) == Path(base)
    # gamma has no base anywhere: an error row that says how to give one
    assert rows["gamma"]["status"] == "error" and "--base" in rows["gamma"]["error"]


def test_the_embedded_ray_stays_on_loopback_and_sends_no_usage_statistics(monkeypatch) -> None:
    import ipaddress
    import sys

    from spectra.fleet.scan import embedded_ray_options

    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED", raising=False)
    options = embedded_ray_options()
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    if sys.platform.startswith("linux"):  # Ray rewrites 127.0.0.1 to the routable address, not 127.0.0.2
        ip = ipaddress.ip_address(options["_node_ip_address"])
        assert ip.is_loopback and str(ip) != "127.0.0.1"


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the Ray path needs ray (pip install 'spectra-lora[fleet]')")
def test_the_ray_path_gives_the_local_numbers(fleet, tmp_path) -> None:
    base, tree = fleet
    local = run(tree, "--base", base, "--engine", "local", "--top-k", "4", "-o", tmp_path / "l")
    ray_run = run(tree, "--base", base, "--engine", "ray", "--workers", "2", "--top-k", "4", "-o", tmp_path / "r")
    assert local.exit_code == ray_run.exit_code == 1, ray_run.output  # the hostile and mismatched adapters
    a = {r["id"]: r for r in adapters_table(tmp_path / "l")}
    b = {r["id"]: r for r in adapters_table(tmp_path / "r")}
    assert a.keys() == b.keys()
    for k in a:
        assert a[k]["status"] == b[k]["status"]
        if a[k]["status"] == "ok":
            assert b[k]["ratio_min"] == pytest.approx(a[k]["ratio_min"], rel=1e-5)


def test_the_batched_rows_are_the_audits_rows(tiny_model_dir, tiny_adapter_dir) -> None:
    """The fleet's per-shape batched computation gives the numbers module_row gives one by one."""
    import torch

    from spectra.audit import _base_spectra, module_row
    from spectra.fleet.engine import batched_rows
    from spectra.io import load_adapter, open_base

    base = tiny_model_dir("bert")
    adapter = tiny_adapter_dir(base, target_modules=["query", "value", "key"])
    with open_base(base) as ckpt, load_adapter(adapter, ckpt) as ad:
        mods = list(ad.modules)
        spectra = _base_spectra(ckpt, {m.base_key: m for m in mods}, 4, False, torch.device("cpu"), torch.float32,
                                None, 1 << 28, lambda n: None)
        one = {m.name: module_row("a", m, ckpt, spectra[m.base_key], torch.device("cpu"), torch.float32) for m in mods}
        many = {r["module"]: r for r in batched_rows("a", mods, spectra, torch.device("cpu"), torch.float32, {})}
    assert one.keys() == many.keys()
    for name, row in one.items():
        assert set(row) == set(many[name])
        for key, value in row.items():
            if isinstance(value, float):
                assert many[name][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
            else:
                assert many[name][key] == value, (name, key)


def test_a_scan_leaves_autograd_as_it_found_it(fleet) -> None:
    """The auditor must not switch gradients off for the whole process (a scan may run beside training)."""
    import torch

    from spectra.fleet.engine import BaseAuditor

    base, tree = fleet
    auditor = BaseAuditor(str(base), top_k=4, cache_dir=False)
    auditor.audit("a", str(tree / "team" / "a0"))
    auditor.close()
    assert torch.is_grad_enabled()


def test_a_scan_names_rules_that_judged_nothing_as_the_audit_does(fleet, tmp_path, monkeypatch) -> None:
    base, tree = fleet
    (tmp_path / "spectra.toml").write_text('[rules.ratio.module-types]\nqurey = 0.0001\n')
    monkeypatch.chdir(tmp_path)
    res = run(tree / "team", "--base", base, "--engine", "local", "--top-k", "4", "-o", tmp_path / "scan")
    assert res.exit_code == 0, res.output  # the typo gates nothing — and the scan says so instead of passing quietly
    assert "warning: rules.ratio.module-types ['qurey'] match no audited module (types here: query, value)" \
        in res.output and "so nothing is gated" in res.output


def test_a_fleet_of_error_rows_exits_3_and_its_sarif_says_the_same(fleet, tmp_path) -> None:
    """The CLI decided 3 ('nothing audited') while fleet.sarif recorded 1 from its own rule; the
    library now decides the code once and both read it."""
    base, tree = fleet
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    shutil.copytree(tree / "hostile", only_bad / "hostile")
    res = run(only_bad, "--base", base, "--engine", "local", "--top-k", "4", "-o", tmp_path / "s")
    assert res.exit_code == 3, res.output
    sarif = json.loads((tmp_path / "s" / "fleet.sarif").read_text())
    assert sarif["runs"][0]["invocations"][0]["exitCode"] == 3
    assert "the scan audited nothing (exit 3)" in (tmp_path / "s" / "report.md").read_text()  # it said "exit 1"


def test_adapter_weights_without_a_config_are_an_error_row_not_skipped(fleet, tmp_path) -> None:
    """A folder holding adapter_model.safetensors but no adapter_config.json was passed over in
    silence: that adapter was neither audited nor reported."""
    base, tree = fleet
    shipped = tmp_path / "tree"
    shutil.copytree(tree / "team" / "a3", shipped / "ok")
    shutil.copytree(tree / "team" / "a4", shipped / "no-config")
    (shipped / "no-config" / "adapter_config.json").unlink()
    res = run(shipped, "--base", base, "--engine", "local", "--top-k", "4", "-o", tmp_path / "s")
    assert res.exit_code == 1, res.output  # the unaudited finding fails the gate
    rows = {r["id"]: r for r in adapters_table(tmp_path / "s")}
    assert rows["ok"]["status"] == "ok" and rows["no-config"]["status"] == "error"
    assert "no adapter_config.json" in rows["no-config"]["error"]
