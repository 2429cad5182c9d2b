"""``spectra scan`` on a fleet of SmolLM2-135M adapters, against the ways to audit a fleet without it.

Made by the script (cached in ``bench/_data/fleet-smollm2-r8/``): ``N`` adapters of r = 8 on all
7 linear projections of the 30 layers of the real SmolLM2-135M base (210 modules, distinct
seeded random factors, fp16, 4.9 MB each) and manifests of the first 100 and all N. The base's
spectra are cached first (one ``spectra audit``), as they are for a fleet scanned again.

Measured side by side in one run, whole processes (wall time, peak RSS of the process itself):

- ``spectra scan`` in-process at N = 100 and N; the marginal cost per adapter between them;
- ``spectra scan --engine ray`` with 1 and 2 workers at N (embedded Ray);
- a loop of ``spectra audit BASE ADAPTER`` processes (10 of them; the per-adapter wall);
- today's in-process multi-adapter audit, ``spectra audit BASE a1 … a100``;
- with ``--cluster``: a two-node Ray cluster on loopback (two ``ray start`` processes, one CPU
  each), ``spectra scan --address``, and how many nodes ran actors.

    make study-deps && pip install -e '.[fleet]'
    python bench/fleet.py [--n 1000] [--cluster] [--json out.json]

Pause anything else running (study workers: ``kill -STOP``) while it measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, machine_line, run_cli  # noqa: E402

RANK = 8


def make_fleet(folder: Path, n: int) -> Path:
    """``n`` seeded random all-linear LoRA adapters on SmolLM2-135M (kept between runs)."""
    import torch
    from safetensors.torch import save_file

    from spectra.io.zoo import smollm2_path

    base = smollm2_path()
    cfg = json.loads((base / "config.json").read_text())
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (inter, h), "mlp.up_proj": (inter, h),
              "mlp.down_proj": (h, inter)}
    for i in range(n):
        d = folder / f"a{i:05d}"
        if (d / "adapter_config.json").is_file():
            continue
        g = torch.Generator().manual_seed(i)
        tensors = {}
        for layer in range(layers):
            for name, (o, inp) in shapes.items():
                pre = f"base_model.model.model.layers.{layer}.{name}"
                tensors[f"{pre}.lora_A.weight"] = (torch.randn(RANK, inp, generator=g) / inp ** 0.5).half()
                tensors[f"{pre}.lora_B.weight"] = (torch.randn(o, RANK, generator=g) * 0.01).half()
        d.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK, "base_model_name_or_path": str(base),
            "target_modules": sorted(k.split(".")[-1] for k in shapes)}))
    return base


def manifest(folder: Path, n: int) -> Path:
    path = folder / f"manifest-{n}.csv"
    rows = ["id,adapter"] + [f"a{i:05d},{folder / f'a{i:05d}'}" for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def scan(src: Path, out: Path, *extra: str) -> dict:
    r = run_cli(["scan", str(src), "-o", str(out), "--overwrite", *extra])
    if r["rc"] not in (0, 1):
        raise RuntimeError(f"scan failed ({r['rc']}): {r['stderr'][-800:]}")
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--cluster", action="store_true", help="also run on a two-node Ray cluster on loopback")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    print(machine_line())
    folder = DATA / "fleet-smollm2-r8"
    t0 = time.perf_counter()
    base = make_fleet(folder, a.n)
    print(f"fleet: {a.n} adapters in {folder} ({time.perf_counter() - t0:.0f} s to make or find)")
    small, full = manifest(folder, 100), manifest(folder, a.n)
    warm = run_cli(["audit", str(base), str(folder / "a00000"), "-o", str(DATA / "fleet-warm"), "--overwrite",
                    "--no-figures"])
    print(f"base spectra cached by one audit: {warm['wall_s']:.1f} s")
    out = DATA / "fleet-out"
    res: dict[str, dict] = {}
    res["scan local 100"] = scan(small, out / "l100", "--engine", "local")
    res[f"scan local {a.n}"] = scan(full, out / "lN", "--engine", "local")
    for w in (1, 2):
        res[f"scan ray {w}w {a.n}"] = scan(full, out / f"r{w}", "--engine", "ray", "--workers", str(w))
    loop = [run_cli(["audit", str(base), str(folder / f"a{i:05d}"), "-o", str(out / f"loop{i}"), "--overwrite",
                     "--no-figures"]) for i in range(10)]
    multi = run_cli(["audit", str(base), *[str(folder / f"a{i:05d}") for i in range(100)], "-o",
                     str(out / "multi"), "--overwrite", "--no-figures"])
    rows = []
    for name, r in res.items():
        n = 100 if name.endswith(" 100") else a.n
        rows.append((name, n, r["wall_s"], n / r["wall_s"], r["rss_mb"]))
    loop_s = sum(r["wall_s"] for r in loop) / len(loop)
    rows.append(("loop of spectra audit processes", 10, loop_s * 10, 1 / loop_s, max(r["rss_mb"] for r in loop)))
    rows.append(("spectra audit BASE a1 … a100", 100, multi["wall_s"], 100 / multi["wall_s"], multi["rss_mb"]))
    print(f"\n{'how':38s} {'N':>6s} {'wall s':>8s} {'adapters/s':>11s} {'peak RSS MB':>12s}")
    for name, n, wall, rate, rss in rows:
        print(f"{name:38s} {n:6d} {wall:8.1f} {rate:11.1f} {rss:12.0f}")
    local_n, local_100 = res[f"scan local {a.n}"]["wall_s"], res["scan local 100"]["wall_s"]
    marginal = (local_n - local_100) / (a.n - 100)
    print(f"\nmarginal cost per adapter (scan local, {a.n} against 100): {1000 * marginal:.1f} ms → "
          f"{1 / marginal:.1f} adapters/s; per-adapter cost at 100: {1000 * local_100 / 100:.1f} ms (start-up included)")
    best = max(r[3] for r in rows if r[0].startswith("scan"))
    one, two = res[f"scan ray 1w {a.n}"]["wall_s"], res[f"scan ray 2w {a.n}"]["wall_s"]
    print(f"scan's best rate against a loop of audit processes: {best * loop_s:.1f}×; against the multi-adapter "
          f"audit: {best / (100 / multi['wall_s']):.1f}×; 2 Ray workers against 1: {one / two:.2f}× "
          "(peak RSS is the driver's: Ray's workers are processes of their own)")
    print(f"peak RSS at N = 100 → {a.n} (in-process): {res['scan local 100']['rss_mb']:.0f} → "
          f"{res[f'scan local {a.n}']['rss_mb']:.0f} MB")
    if a.cluster:
        res["cluster"] = cluster(manifest(folder, 200), out / "cluster")
    if a.json:
        Path(a.json).write_text(json.dumps({k: {x: y for x, y in v.items() if x not in ("stdout", "stderr")}
                                            for k, v in res.items()}, indent=2))
    return 0


def cluster(src: Path, out: Path) -> dict:
    """Two ``ray start`` processes on loopback (one CPU each: head 127.0.0.2, worker 127.0.0.3) and a scan on them.

    Only loopback addresses: ``ray start`` rewrites ``--node-ip-address 127.0.0.1`` (and
    ``localhost``) to the machine's routable address, so the head is 127.0.0.2, which it keeps;
    the nodes' addresses are checked in ``ray.nodes()`` before the scan. Usage stats are off.
    Ray 2.60 turns token authentication on by itself when ``~/.ray/auth_token`` exists, and a
    driver given an explicit ``--address`` must then say so; here every process (both nodes,
    the check, the scan) gets ``RAY_AUTH_MODE=token`` and the same fresh ``RAY_AUTH_TOKEN``,
    so no file is read or written (Ray's gRPC ports listen on all interfaces: the token keeps
    them closed). ``spectra scan --address 127.0.0.2:6389 --workers 2`` then puts one actor on
    each node (one CPU each), and the actor table says which nodes ran them."""
    import os
    import secrets

    ray = str(Path(sys.executable).with_name("ray"))
    head, port = "127.0.0.2", "6389"
    address = f"{head}:{port}"
    n = len(src.read_text().splitlines()) - 1
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # for the ray CLI, the check below and the scan's own process
    nice = ["nice", "-n", "5"]
    subprocess.run([ray, "stop", "--force"], capture_output=True)
    try:
        common = ["--num-cpus", "1", "--disable-usage-stats"]
        subprocess.run([*nice, ray, "start", "--head", "--port", port, "--node-ip-address", head,
                        "--include-dashboard", "false", *common], check=True, capture_output=True)
        subprocess.run([*nice, ray, "start", "--address", address, "--node-ip-address", "127.0.0.3", *common],
                       check=True, capture_output=True)
        import ray as rayapi

        rayapi.init(address=address, log_to_driver=False)
        nodes = {x["NodeID"]: x["NodeManagerAddress"] for x in rayapi.nodes() if x["Alive"]}
        rayapi.shutdown()
        if len(nodes) != 2 or not all(ip.startswith("127.") for ip in nodes.values()):
            raise RuntimeError(f"expected two loopback nodes, got {sorted(nodes.values())}")
        r = scan(src, out, "--engine", "ray", "--address", address, "--workers", "2")
        rayapi.init(address=address, log_to_driver=False)
        ran = sorted({nodes.get(a["Address"]["NodeID"], a["Address"]["IPAddress"])
                      for a in rayapi._private.state.actors().values()})
        rayapi.shutdown()
        r["nodes_with_actors"] = ran
        print(f"\ntwo-node loopback cluster ({', '.join(sorted(nodes.values()))}; 1 CPU each): {n} adapters in "
              f"{r['wall_s']:.1f} s = {n / r['wall_s']:.1f} adapters/s (exit {r['rc']}); actors ran on {', '.join(ran)}")
        return r
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


if __name__ == "__main__":
    sys.exit(main())
