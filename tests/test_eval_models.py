"""Several models on one load of the base: the numbers are those of one ``run_eval`` per model."""

from __future__ import annotations

import pytest
from conftest import build_tiny_tokenizer


def _data():
    from spectra.data.labelled import LabelledData

    texts = ["good movie", "bad film", "great acting", "awful plot", "fun story", "boring movie", "nice", "dull"] * 3
    return LabelledData(texts, [1, 0, 1, 0, 1, 0, 1, 0] * 3, ["neg", "pos"], "tiny.csv", "0" * 64)


def test_one_load_gives_each_models_own_numbers(tiny_model_dir, tiny_adapter_dir) -> None:
    from spectra.eval.pipeline import evaluate_models, run_eval
    from spectra.eval.settings import EvalSettings

    base = tiny_model_dir("bert")
    build_tiny_tokenizer(base)
    # two adapters that differ in rank, targets and their own trained heads (modules_to_save)
    # (random A and B, a large α: updates strong enough to change predictions)
    one = tiny_adapter_dir(base, name="one", seed=1, target_modules=["query", "value"], modules_to_save=["classifier"],
                           lora_alpha=512)
    two = tiny_adapter_dir(base, name="two", seed=2, r=2, target_modules=["key", "dense"],
                           modules_to_save=["classifier"], lora_alpha=1e-6)  # all but the base
    models = {"base": None, "one": str(one), "two": str(two)}
    together = evaluate_models(base, models, _data(), "badnet:mn", 0, EvalSettings(max_length=16, device="cpu"))
    assert list(together) == ["base", "one", "two"]
    for name, path in models.items():
        alone = run_eval(str(base), path, _data(), "badnet:mn", 0, max_length=16, device="cpu", progress=False)
        got = together[name]
        assert (got.n_correct, got.n_hits, got.n_floor_hits) == (alone.n_correct, alone.n_hits, alone.n_floor_hits)
        assert got.predicted_share == pytest.approx(alone.predicted_share)
        assert got.meta["inputs"]["adapter"] == alone.meta["inputs"]["adapter"]
    # "one" predicts otherwise than the base and "two" (≈ the base): a row that took another model's
    # adapter, or a base row that kept an adapter on, would fail the comparisons above
    shares = {name: tuple(r.predicted_share) for name, r in together.items()}
    assert shares["one"] != shares["base"] == shares["two"], shares
