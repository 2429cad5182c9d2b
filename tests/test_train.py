"""RoRA training (spectra.train): Tr's closed form and effect, CI's train/eval behaviour,
Pt's σ target after a plain-PEFT reload, saved-vs-in-memory logits, and a 2-process DDP run."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import build_tiny_model, build_tiny_tokenizer, make_adapter

from spectra.errors import SpectraError


# --------------------------------------------------------------------------- helpers


def write_sentiment_csv(path: Path, n: int = 64, seed: int = 0) -> Path:
    """Tiny balanced sentiment data in the tiny tokenizer's vocabulary."""
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fun", "love", "best", "nice"], ["bad", "awful", "boring", "dull", "worst", "poor"]
    lines = ["text,label"]
    for i in range(n):
        y = i % 2
        words = [rng.choice(["the", "this", "a"]), rng.choice(["movie", "film", "plot", "story"]), "was",
                 rng.choice(pos if y else neg), rng.choice(["and", "so", "very"]), rng.choice(pos if y else neg)]
        lines.append(f"{' '.join(words)},{y}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tiny_base(folder: Path, arch: str = "bert", seed: int = 0) -> Path:
    model = build_tiny_model(arch, seed)
    model.save_pretrained(folder)
    build_tiny_tokenizer(folder)
    return folder


def one_linear_peft(out_f: int = 5, in_f: int = 6, weight: torch.Tensor | None = None, bias: bool = True, **lora):
    """A PEFT LoRA model around a single nn.Linear (module name ``lin``)."""
    from peft import LoraConfig, get_peft_model

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(in_f, out_f, bias=bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    torch.manual_seed(0)
    net = Net()
    if weight is not None:
        with torch.no_grad():
            net.lin.weight.copy_(weight)
    lora.setdefault("r", 2)
    lora.setdefault("lora_alpha", 4)
    lora.setdefault("init_lora_weights", False)
    lora.setdefault("lora_dropout", 0.0)
    return get_peft_model(net, LoraConfig(target_modules=["lin"], **lora))


# --------------------------------------------------------------------------- Tr


def test_penalty_matches_closed_form_by_hand() -> None:
    from spectra.train.regularizers import subspace_penalty

    U = torch.tensor([[1.0], [0.0], [0.0]])  # e1 in R^3
    V = torch.tensor([[0.0], [1.0], [0.0], [0.0]])  # e2 in R^4
    B = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    A = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    # ‖U_kᵀB‖² = 1² + 2² = 5 (first row of B); ‖A V_k‖² = 2² + 6² = 40 (second column of A)
    assert float(subspace_penalty(B, A, U, V)) == pytest.approx(45.0)


def test_penalty_on_a_peft_layer_uses_w_pre_top_k_and_full_basis_is_weight_decay() -> None:
    from spectra.train.regularizers import attach_subspace_bases

    # W = diag(5, 4, 3, 2, 1) padded to 5×6: its top-2 singular vectors are e1, e2 on both sides
    W = torch.zeros(5, 6)
    W[range(5), range(5)] = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    model = one_linear_peft(weight=W)
    tr = attach_subspace_bases(model, k=2, cache=None)
    layer = tr.layers()[0][1]
    B, A = layer.lora_B["default"].weight, layer.lora_A["default"].weight
    by_hand = B[:2].square().sum() + A[:, :2].square().sum()  # rows/columns 1..2
    assert float(tr().detach()) == pytest.approx(float(by_hand.detach()), rel=1e-5)
    assert tr.sigma_max["lin"] == pytest.approx(5.0, rel=1e-5)
    # buffers are non-persistent: nothing enters a state dict or a saved adapter
    assert not any("rora_" in k for k in model.state_dict())

    # square W, full basis (k = n): the penalty is ‖B‖² + ‖A‖², plain weight decay
    Wsq = torch.randn(6, 6, generator=torch.Generator().manual_seed(3))
    square = one_linear_peft(out_f=6, in_f=6, weight=Wsq)
    full = attach_subspace_bases(square, k=6, cache=None, exact=True)
    lay = full.layers()[0][1]
    decay = lay.lora_B["default"].weight.square().sum() + lay.lora_A["default"].weight.square().sum()
    assert float(full().detach()) == pytest.approx(float(decay.detach()), rel=1e-4)


def test_top_k_larger_than_a_layer_allows_is_an_error() -> None:
    from spectra.train.regularizers import attach_subspace_bases

    with pytest.raises(SpectraError, match="--top-k 7 is larger than module lin allows"):
        attach_subspace_bases(one_linear_peft(out_f=5, in_f=6), k=7, cache=None)


def test_penalty_alone_drives_overlap_with_w_pre_top_k_down() -> None:
    from spectra.spectral import lowrank_svd, subspace_overlap, top_singular
    from spectra.train.regularizers import attach_subspace_bases

    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 32, generator=g)
    model = one_linear_peft(out_f=40, in_f=32, weight=W, r=4, lora_alpha=8)
    tr = attach_subspace_bases(model, k=8, cache=None)
    layer = tr.layers()[0][1]
    top = top_singular(W, 8, exact=True)

    def overlap() -> float:
        svd = lowrank_svd(layer.lora_B["default"].weight.detach(), layer.lora_A["default"].weight.detach())
        return float(subspace_overlap(top.U, top.Vh, svd.U, svd.S, svd.Vh)["overlap"])

    before = overlap()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(40):
        opt.zero_grad()
        tr().backward()
        opt.step()
    after = overlap()
    assert before > 0.1  # a random rank-4 update has about k/n = 1/4 of its energy there
    assert after < 0.01 * before


def test_trainer_adds_lambda_times_the_sum_over_modules(tmp_path: Path) -> None:
    """Tr's normalisation: loss = task + λ·Σ_modules, whatever the number of modules."""
    from spectra.data import load_labelled
    from spectra.train.config import RoRAConfig
    from spectra.train.recipe import RoRARecipe

    base = tiny_base(tmp_path / "base")
    data = load_labelled(str(write_sentiment_csv(tmp_path / "train.csv", n=16)))
    cfg = RoRAConfig(ci=False, top_k=4, lam=3.0, lora_dropout=0.0, batch_size=8, epochs=1, init="gaussian")
    recipe = RoRARecipe(base, data, tmp_path / "work", cfg, device="cpu", cache_dir=False).setup()
    model, trainer = recipe.rora.model, recipe.trainer
    batch = trainer.data_collator([recipe.trainer.train_dataset[i] for i in range(8)])
    model.train()
    with torch.no_grad():  # same seed: the same BERT dropout masks in both passes
        torch.manual_seed(0)
        total = trainer.compute_loss(model, dict(batch))
        torch.manual_seed(0)
        task = model(**batch).loss
        terms = recipe.rora.tr.terms()
    assert len(terms) == 4  # query and value of 2 blocks
    assert float(total) == pytest.approx(float(task) + 3.0 * float(sum(terms)), rel=1e-5)


# --------------------------------------------------------------------------- CI


def test_ci_is_identity_in_eval_and_drops_only_the_base_path_in_training() -> None:
    from spectra.train.base_dropout import attach_base_dropout

    model = one_linear_peft(out_f=64, in_f=48, r=4, lora_alpha=8)
    model.eval()
    x = torch.randn(512, 48, generator=torch.Generator().manual_seed(1))
    plain = model(x).detach()
    layer = model.base_model.model.lin
    base_layer = layer.get_base_layer()

    ci = attach_base_dropout(model, p=0.25)
    assert ci.modules == ["lin"]
    assert torch.equal(model(x).detach(), plain)  # eval: exactly plain LoRA

    model.train()
    torch.manual_seed(0)
    trained = model(x).detach()
    assert not torch.allclose(trained, plain)
    # the LoRA path is untouched (lora_dropout = 0): subtract it to see the base path alone
    lora_out = layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]
    base_out = (trained - lora_out.detach())
    wx = x @ base_layer.weight.detach().T
    b = base_layer.bias.detach()
    dropped = torch.isclose(base_out, b.expand_as(base_out), atol=1e-6)
    rate = dropped.float().mean().item()
    assert abs(rate - 0.25) < 0.01  # 32,768 entries: 5σ ≈ 0.012
    kept = ~dropped
    torch.testing.assert_close(base_out[kept], (wx / 0.75 + b)[kept], rtol=1e-4, atol=1e-5)  # bias not dropped

    ci.remove()
    assert torch.allclose(model(x).detach(), plain)  # train mode without CI and lora_dropout 0: plain


def test_ci_rejects_a_rate_outside_zero_one() -> None:
    from spectra.train.base_dropout import attach_base_dropout

    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(SpectraError, match="--base-dropout"):
            attach_base_dropout(one_linear_peft(), p=p)


def test_config_validation_names_the_option() -> None:
    from spectra.train.config import RoRAConfig, parse_rescale_layers, parse_target_modules

    for bad, option in ((dict(lam=-1.0), "--lam"), (dict(base_dropout=1.0), "--base-dropout"),
                        (dict(top_k=0), "--top-k"), (dict(rescale_factor=0.0), "--rescale-factor"),
                        (dict(init="mica"), "--init"), (dict(init="pissa", use_rslora=True), "--init")):
        with pytest.raises(SpectraError, match=option):
            RoRAConfig(**bad).validate()
    assert RoRAConfig().method == "rora"
    assert RoRAConfig.baseline("lora").method == "lora"
    assert RoRAConfig(tr=False, pt=False).method == "lora+ci"
    assert RoRAConfig(pt=False).method == "lora+ci+tr"
    assert parse_rescale_layers("all") == "all" and parse_rescale_layers("2") == 2
    assert parse_target_modules(["query,value", "key"]) == ["query", "value", "key"]
    assert parse_target_modules(["all-linear"]) == "all-linear"
    with pytest.raises(SpectraError):
        parse_rescale_layers("top")


# --------------------------------------------------------------------------- Pt


@pytest.mark.parametrize("variant", [{}, {"use_rslora": True}, {"use_dora": True},
                                     {"rank_pattern": {"value": 2}, "alpha_pattern": {"value": 3}}])
def test_pt_meets_sigma_target_after_plain_peft_reload(tmp_path: Path, variant: dict) -> None:
    import transformers as tf
    from peft import PeftModel

    from spectra.train.rescale import rescale_adapter

    base = tiny_base(tmp_path / "base")
    model = tf.AutoModelForSequenceClassification.from_pretrained(base)
    adapter = make_adapter(model, tmp_path / "ad", target_modules=["query", "value"], **variant)
    plan = rescale_adapter(base, adapter, tmp_path / "rescaled", layers=1, factor=1.0)
    assert {r.module for r in plan.rescaled} == {"bert.encoder.layer.1.attention.self.query",
                                                 "bert.encoder.layer.1.attention.self.value"}

    reloaded = PeftModel.from_pretrained(tf.AutoModelForSequenceClassification.from_pretrained(base),
                                         tmp_path / "rescaled")
    original = PeftModel.from_pretrained(tf.AutoModelForSequenceClassification.from_pretrained(base), adapter)
    checked = 0
    for (name, mod), (_, orig) in zip(reloaded.named_modules(), original.named_modules()):
        if not hasattr(mod, "lora_A") or "default" not in getattr(mod, "lora_A", {}):
            continue
        W = mod.get_base_layer().weight.detach().double()
        BA = (mod.lora_B["default"].weight @ mod.lora_A["default"].weight).detach().double()
        s = mod.scaling["default"]
        if ".layer.1." in name:
            sigma = torch.linalg.svdvals(s * BA)[0]
            assert abs(float(sigma / torch.linalg.svdvals(W)[0]) - 1.0) < 1e-4
            checked += 1
        else:
            assert s == orig.scaling["default"]  # layer 0 untouched
    assert checked == 2
    cfg = json.loads((tmp_path / "rescaled" / "adapter_config.json").read_text())
    assert r"bert\.encoder\.layer\.1\.attention\.self\.query" in cfg["alpha_pattern"]


def test_pattern_keys_match_exactly_one_module() -> None:
    from peft.utils.other import get_pattern_key

    from spectra.train.rescale import pattern_key

    names = ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.11.attention.self.query",
             "bert.encoder.layer.1.attention.self.query_proj", "bert.encoder.layerX1.attention.self.query"]
    key = pattern_key(names[0])
    assert [get_pattern_key([key], n) == key for n in names] == [True, False, False, False]


def test_pt_all_none_and_factor(tmp_path: Path) -> None:
    import transformers as tf

    from spectra.train.rescale import rescale_adapter

    base = tiny_base(tmp_path / "base")
    adapter = make_adapter(tf.AutoModelForSequenceClassification.from_pretrained(base), tmp_path / "ad",
                           target_modules=["query", "value"])
    every = rescale_adapter(base, adapter, None, layers="all", factor=2.0)
    assert len(every.rescaled) == 4
    for r in every.rescaled:
        assert r.sigma_delta_after == pytest.approx(2.0 * r.sigma_pre, rel=1e-9)
    nothing = rescale_adapter(base, adapter, None, layers="none")
    assert not nothing.rescaled and nothing.config["alpha_pattern"] == {}


# --------------------------------------------------------------------------- saving


@pytest.mark.parametrize("variant", [{}, {"init": "pissa"}, {"init": "olora"},
                                     {"init": "gaussian", "use_rslora": True}, {"use_dora": True}],
                         ids=["default", "pissa", "olora", "gaussian-rslora", "dora"])
def test_saved_adapter_gives_the_in_memory_logits(tmp_path: Path, variant: dict) -> None:
    import transformers as tf
    from peft import PeftModel

    from spectra.data import load_labelled
    from spectra.train.config import RoRAConfig
    from spectra.train.recipe import RoRARecipe

    base = tiny_base(tmp_path / "base")
    data = load_labelled(str(write_sentiment_csv(tmp_path / "train.csv", n=32)))
    init = variant.get("init", "default")
    cfg = RoRAConfig(top_k=4, batch_size=16, epochs=1, lr=5e-3, rank=4, **variant)
    recipe = RoRARecipe(base, data, tmp_path / "work", cfg, device="cpu", cache_dir=False).setup()
    recipe.train()
    model = recipe.rora.model.eval()
    batch = recipe.trainer.data_collator([recipe.trainer.train_dataset[i] for i in range(8)])
    batch.pop("labels")
    with torch.no_grad():
        mem = model(**batch).logits
    folder = recipe.save(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tf.AutoModelForSequenceClassification.from_pretrained(base), folder).eval()
    with torch.no_grad():
        disk = reloaded(**batch).logits
    torch.testing.assert_close(disk, mem, rtol=1e-4, atol=1e-5)
    cfg_saved = json.loads((folder / "adapter_config.json").read_text())
    assert cfg_saved["r"] == (8 if init in ("pissa", "olora") else 4)  # converted to plain LoRA (2r)
    # checkpoints every epoch, with the RoRA log in the trainer state
    state = json.loads(next((tmp_path / "work" / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    logged = [r for r in state["log_history"] if "penalty" in r]
    assert logged and logged[0]["penalty"] > 0 and any(k.startswith("sigma_delta/") for k in logged[0])


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_end_with_identical_adapters(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    base = tiny_base(tmp_path / "base")
    data = write_sentiment_csv(tmp_path / "train.csv", n=64)
    worker = Path(__file__).with_name("dist_train_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(worker),
           str(base), str(data), str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = [json.loads((tmp_path / "out" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in info] == [2, 2] and info[0]["backend"] == "gloo"
    assert info[0]["global_step"] == info[1]["global_step"] == 3
    w0 = load_file(tmp_path / "out" / "rank0.safetensors")
    w1 = load_file(tmp_path / "out" / "rank1.safetensors")
    init = load_file(tmp_path / "out" / "init.safetensors")
    assert w0.keys() == w1.keys() and any("lora_B" in k for k in w0)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert any(not torch.equal(w0[k], init[k]) for k in w0)  # training moved the weights
    # each rank saw different batches (DistributedSampler), so identical weights prove the all-reduce
    assert info[0]["first_batch"] != info[1]["first_batch"]
    assert math.isfinite(info[0]["penalty"]) and info[0]["penalty"] > 0
    # the task loss is the global mean cross-entropy (≈ ln 2 here), not N_processes × it
    assert len(info[0]["task_losses"]) == 3 and all(0.3 < t < 1.0 for t in info[0]["task_losses"])


def test_gradient_accumulation_keeps_the_task_loss_a_mean(tmp_path: Path) -> None:
    from spectra.data import load_labelled
    from spectra.train.config import RoRAConfig
    from spectra.train.recipe import RoRARecipe

    base = tiny_base(tmp_path / "base")
    data = load_labelled(str(write_sentiment_csv(tmp_path / "train.csv", n=32)))
    cfg = RoRAConfig(top_k=4, batch_size=8, grad_accum=2, epochs=1, lr=1e-5)
    recipe = RoRARecipe(base, data, tmp_path / "work", cfg, device="cpu", cache_dir=False,
                        save_strategy="no").setup()
    recipe.train()
    row = recipe.log_table().iloc[-1]
    assert 0.5 < row["task_loss"] < 0.9  # binary cross-entropy near ln 2, not 2·ln 2


def test_ci_backward_passes_gradient_only_through_kept_entries() -> None:
    from spectra.train.base_dropout import base_path_dropout

    g = torch.Generator().manual_seed(0)
    y = torch.randn(64, 256, generator=g, requires_grad=True)
    b = torch.randn(256, generator=g) + 5.0  # frozen bias, far from the data so "dropped" is unambiguous
    up = torch.randn(64, 256, generator=g)
    torch.manual_seed(1)
    out = base_path_dropout(y, b, 0.3)
    (out * up).sum().backward()
    dropped = out.detach() == b
    keep = 1 - round(0.3 * 32768) / 32768  # the mask's rate is p on a 2⁻¹⁵ grid
    assert abs(dropped.float().mean().item() - 0.3) < 0.015
    torch.testing.assert_close(out.detach()[~dropped], ((y.detach() - b) / keep + b)[~dropped])
    torch.testing.assert_close(y.grad, torch.where(dropped, 0.0, up / keep))
    # a trainable bias takes the generic path, with the bias's own gradient
    bt = b.clone().requires_grad_(True)
    torch.manual_seed(1)
    out2 = base_path_dropout(y.detach(), bt, 0.3)
    out2.sum().backward()
    dropped2 = out2.detach() == bt.detach()
    # ∂/∂b of dropout(y − b) + b: 1 where dropped, 1 − 1/(1−p) where kept
    want = torch.where(dropped2, 1.0, 1.0 - 1 / 0.7).sum(dim=0)
    torch.testing.assert_close(bt.grad, want)


def test_all_linear_targets_every_block_linear_and_not_the_head(tmp_path: Path) -> None:
    import transformers as tf

    from spectra.train.config import RoRAConfig
    from spectra.train.model import prepare_model

    model = tf.AutoModelForSequenceClassification.from_pretrained(tiny_base(tmp_path / "base"))
    rora = prepare_model(model, RoRAConfig(target_modules="all-linear", top_k=4), cache=None)
    types = {n.split("encoder.layer.0.", 1)[1] for n in rora.modules if ".layer.0." in n}
    assert types == {"attention.self.query", "attention.self.key", "attention.self.value",
                     "attention.output.dense", "intermediate.dense", "output.dense"}
    assert not any("classifier" in n for n in rora.modules)  # the head is modules_to_save, not LoRA
    assert len(rora.tr.modules) == len(rora.ci.modules) == len(rora.modules)
    # Pt's modules: the top 3 of 2 blocks = every module inside a block (not the pooler)
    assert rora.monitored == [n for n in rora.modules if ".layer." in n]
    assert "bert.pooler.dense" in rora.modules and "bert.pooler.dense" not in rora.monitored


def test_drop_mask_rate_and_halves_are_unbiased() -> None:
    from spectra.train.base_dropout import drop_mask

    torch.manual_seed(0)
    for p, shape in ((0.1, (200, 1001)), (0.5, (3, 7, 9_999))):  # odd element count included
        drop, p_eff = drop_mask(shape, p)
        assert drop.shape == shape and drop.dtype == torch.bool
        assert abs(p_eff - p) <= 1 / 65536
        flat = drop.flatten()[: (drop.numel() // 2) * 2].view(-1, 2).float()
        for rate in (drop.float().mean().item(), *flat.mean(0).tolist()):  # overall, and per int16 half
            assert abs(rate - p_eff) < 5 * math.sqrt(p * (1 - p) / flat.shape[0])


@pytest.mark.parametrize("options, kind", [(dict(), "LoRA r=8"), (dict(init="pissa"), "LoRA (pissa init) r=8"),
                                           (dict(use_dora=True), "DoRA r=8")])
def test_the_training_log_names_the_variant_it_trains(tmp_path: Path, options: dict, kind: str) -> None:
    import transformers as tf

    from spectra.train.config import RoRAConfig
    from spectra.train.model import prepare_model

    model = tf.AutoModelForSequenceClassification.from_pretrained(tiny_base(tmp_path / "base"))
    lines: list[str] = []
    prepare_model(model, RoRAConfig.baseline("lora", **options), cache=None, log=lines.append)
    assert lines[0].startswith(f"lora: {kind} α=16 on ")


def test_a_pissa_adapters_logged_sigma_delta_is_its_update_since_initialisation(tmp_path: Path) -> None:
    """PiSSA moves W_pre's top singular part into B₀A₀: σ_max(s·BA) starts near σ_max(W_pre)
    (the log read σ_pre/σ_Δ ≈ 1 for an adapter that had learnt nothing). The update is s·(BA − B₀A₀)."""
    import torch
    import transformers as tf

    from spectra.spectral import lowrank_svd
    from spectra.train.config import RoRAConfig
    from spectra.train.model import prepare_model
    from spectra.train.trainer import spectral_stats

    model = tf.AutoModelForSequenceClassification.from_pretrained(tiny_base(tmp_path / "base"))
    rora = prepare_model(model, RoRAConfig.baseline("lora", init="pissa"), cache=None)
    name = rora.monitored[0]
    layer = rora.layer(name)
    B0, A = layer.lora_B["default"].weight.detach().clone(), layer.lora_A["default"].weight.detach().clone()
    scale = float(layer.scaling["default"])
    assert float(lowrank_svd(B0, A, scale).S[0]) > 0.1  # the principal part the adapter starts from
    assert spectral_stats(rora)[f"sigma_delta/{name}"] == pytest.approx(0.0, abs=1e-6)  # nothing learnt yet
    step = 0.01 * torch.randn(B0.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.lora_B["default"].weight += step
    want = float(lowrank_svd(step, A, scale).S[0])
    assert spectral_stats(rora)[f"sigma_delta/{name}"] == pytest.approx(want, rel=1e-4)


def test_the_training_log_shows_a_tiny_overlap_in_significant_digits() -> None:
    from spectra.train.trainer import format_log

    assert "overlap 2.3e-07" in format_log({"epoch": 3.0, "loss": 0.1, "overlap": 2.34e-7})
    assert "overlap 0.25" in format_log({"epoch": 3.0, "loss": 0.1, "overlap": 0.25})
