"""Helpers shared by the benchmark scripts in ``bench/``.

- measuring a command in its own process (wall time, CPU time and peak RSS from
  ``os.wait4``, i.e. that process's own ``ru_maxrss``),
- audit tables as plain rows, and the printout of the forced-randomized check
  (the checks themselves: :mod:`spectra.testing.accuracy`),
- random peft-made adapters on the real models of :mod:`spectra.io.zoo`, cached under
  ``bench/_data/``: an r=8 LoRA on all-MiniLM-L6-v2 and an all-linear r=16 LoRA on
  SmolLM2-135M.

Heavy imports (torch, transformers, peft, pandas) happen inside the functions.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "_data"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROW_COLS = ("module", "layer", "module_type", "sigma_pre", "sigma_delta", "cos_max_left", "cos_max_right",
            "overlap", "spectrum_method")


# --------------------------------------------------------------------------------------
# measuring processes


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this
    process's own address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there
    because Linux carries it across ``exec``: a child started by Python's ``subprocess``
    (vfork + exec) reports at least its *parent's* peak RSS (an 800 MB parent makes a
    13 MB child report 813 MB). Elsewhere ``ru_maxrss`` is the fallback.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
                 timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd``; return rc, wall seconds, CPU seconds (user+sys) of that one child
    (``os.wait4``), stdout and stderr. ``rss_mb_inherited`` is the child's ``ru_maxrss``,
    which includes this parent's peak (see :func:`peak_rss_mb`): use :func:`run_cli` or a
    worker that reports its own ``VmHWM`` for memory."""
    import tempfile

    full_env = dict(os.environ)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=cwd)
        deadline = None if timeout is None else t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                "rss_mb_inherited": usage.ru_maxrss / 1024, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace")}


def spectra_exe() -> list[str]:
    """The installed ``spectra`` command (next to this Python), else ``python -m`` fallback."""
    exe = Path(sys.executable).with_name("spectra")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("spectra")
    if found:
        return [found]
    return [sys.executable, "-c", "from spectra_cli.app import main; main()"]


# runs the spectra CLI's own entry point and writes the process's VmHWM at exit
_CLI_LAUNCHER = (
    "import atexit, sys\n"
    "out = sys.argv[1]\n"
    "def _hwm():\n"
    "    from pathlib import Path\n"
    "    sys.path.insert(0, %r)\n"
    "    from _common import peak_rss_mb\n"
    "    Path(out).write_text(str(peak_rss_mb()))\n"
    "atexit.register(_hwm)\n"
    "sys.argv = ['spectra'] + sys.argv[2:]\n"
    "from spectra_cli.app import main\n"
    "main()\n"
) % str(Path(__file__).resolve().parent)


def run_cli(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """``spectra ARGS`` in a fresh process (the installed entry point ``spectra_cli.app:main``,
    run by this Python), with its wall/CPU time and its own peak RSS (``VmHWM`` at exit)."""
    import tempfile

    fd, hwm = tempfile.mkstemp(suffix=".hwm")
    os.close(fd)
    try:
        r = run_measured([sys.executable, "-c", _CLI_LAUNCHER, hwm, *args], env=env)
        text = Path(hwm).read_text().strip()
        r["rss_mb"] = float(text) if text else float("nan")
    finally:
        Path(hwm).unlink(missing_ok=True)
    return r


# PEFT's own spectral pass over an adapter, as a user would run it: load the base model
# and the adapter with transformers + peft, then ``reduce_intruder_dimension`` (a full SVD
# of W and of W + ΔW for every LoRA module); writes the process's VmHWM at exit
_PEFT_INTRUDER = (
    "import sys\n"
    "sys.path.insert(0, %r)\n"
    "out, base, adapter = sys.argv[1:4]\n"
    "import torch\n"
    "from peft import PeftModel\n"
    "from peft.tuners.lora.intruders import reduce_intruder_dimension\n"
    "from transformers import AutoModelForCausalLM\n"
    "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)\n"
    "reduce_intruder_dimension(model, logging_sink=None)\n"
    "from pathlib import Path\n"
    "from _common import peak_rss_mb\n"
    "Path(out).write_text(str(peak_rss_mb()))\n"
) % str(Path(__file__).resolve().parent)


def run_peft_intruder(base: Path, adapter: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A whole process running PEFT's ``reduce_intruder_dimension`` on ``adapter`` over the
    causal LM ``base``: wall/CPU time and its own peak RSS, like :func:`run_cli`."""
    import tempfile

    fd, hwm = tempfile.mkstemp(suffix=".hwm")
    os.close(fd)
    try:
        r = run_measured([sys.executable, "-c", _PEFT_INTRUDER, hwm, str(base), str(adapter)], env=env)
        if r["rc"] != 0:
            raise RuntimeError(f"PEFT reduce_intruder_dimension process failed: {r['stderr'][-2000:]}")
        r["rss_mb"] = float(Path(hwm).read_text().strip())
    finally:
        Path(hwm).unlink(missing_ok=True)
    return r


def time_help(repeats: int = 5, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall time of ``spectra --help`` in a fresh process, best and median of ``repeats``."""
    import statistics

    walls = []
    for _ in range(repeats):
        r = run_measured(spectra_exe() + ["--help"], env=env)
        if r["rc"] != 0:
            raise RuntimeError(f"spectra --help failed: {r['stderr'][-500:]}")
        walls.append(r["wall_s"])
    return {"best_s": min(walls), "median_s": statistics.median(walls), "all_s": walls}


def machine_line() -> str:
    import torch

    return (f"{platform.node()} · {os.cpu_count()} logical CPUs · load avg "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} · torch {torch.__version__} "
            f"({torch.get_num_threads()} threads) · Python {platform.python_version()}")


# --------------------------------------------------------------------------------------
# comparing audit tables


def rows_of(table: Any) -> list[dict[str, Any]]:
    """The columns :data:`ROW_COLS` of an audit DataFrame as plain JSON-able records."""
    keep = [c for c in ROW_COLS if c in table.columns]
    rows = table[keep].to_dict("records")
    for r in rows:
        r["layer"] = None if r.get("layer") is None or str(r["layer"]) in ("<NA>", "nan") else int(r["layer"])
    return rows


def csv_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an ``audit.csv`` written by ``spectra audit``."""
    import pandas as pd

    return rows_of(pd.read_csv(path))


# --------------------------------------------------------------------------------------
# real weights


def _atomic_folder(folder: Path) -> Path:
    """A fresh ``folder.partial`` to build in; rename it to ``folder`` when done."""
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def minilm_adapter(folder: Path = DATA / "minilm-lora-r8", seed: int = 0) -> Path:
    """A peft-made random LoRA on MiniLM (r=8, α=16, query/key/value/dense, ``init_lora_weights=False``)."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from spectra.io.zoo import minilm_path

    tmp = _atomic_folder(folder)
    model = AutoModel.from_pretrained(str(minilm_path()))
    torch.manual_seed(seed)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "key", "value", "dense"],
                     init_lora_weights=False)
    get_peft_model(model, cfg).save_pretrained(str(tmp))
    tmp.rename(folder)
    return folder


def smollm2_adapter(base: Path, folder: Path = DATA / "smollm2-lora-r16", seed: int = 0, rank: int = 16) -> Path:
    """A peft-made random all-linear LoRA on SmolLM2-135M (r=``rank``, α=2r, ``init_lora_weights=False``)."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tmp = _atomic_folder(folder)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    targets = json.dumps(sorted(peft_model.peft_config["default"].target_modules))
    if "lm_head" in targets:
        raise RuntimeError("peft's all-linear included lm_head")
    peft_model.save_pretrained(str(tmp))
    tmp.rename(folder)
    return folder


# --------------------------------------------------------------------------------------
# forced-randomized accuracy on real weights


def print_forced(name: str, res: dict[str, Any], k: int) -> None:
    print(f"\nforced randomized top-{k} (min_dim_randomized=0) vs exact SVD on {name}: "
          f"{res['matrices']} matrices, {res['fallbacks']} fell back to exact")
    print(f"  {'shape':>11} {'n':>3} {'randomized s':>12} {'exact s':>8}  {'max σ1 rel':>10} {'max σi rel':>10} "
          f"{'max 1-|cos|':>11}  method")
    for g in res["groups"]:
        print(f"  {g['shape']:>11} {g['count']:>3} {g['randomized_s']:12.2f} {g['exact_s']:8.2f}  "
              f"{g['sigma1_rel']:10.1e} {g['sigma_rel']:10.1e} {g['one_minus_cos']:11.1e}  {g['method']}")
    print(f"  all: max σ1 rel err {res['sigma1_rel']:.1e}, max σ_i rel err (i ≤ {k}) {res['sigma_rel']:.1e}, "
          f"max 1-|cos| of the top-{k} vectors {res['one_minus_cos']:.1e}; "
          f"{res['t_randomized_s']:.1f} s randomized vs {res['t_exact_s']:.1f} s exact")


def finish(summary: dict, json_path: str | None, failures: list[str]) -> int:
    """Write ``summary`` to ``json_path`` (when given) and turn the accuracy failures into the
    exit status every benchmark uses: 1 when an accuracy target was missed, else 0."""
    import json
    from pathlib import Path

    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if failures:
        print("\nACCURACY TARGETS MISSED: " + "; ".join(failures))
        return 1
    print("\naccuracy targets met")
    return 0
