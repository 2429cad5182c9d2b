"""RoRA's CI: dropout on the frozen base path ``W_pre·x`` of every adapted module.

Luong & Chen (2026) argue that LoRA fails to forget a backdoor partly because the frozen
path ``W_pre·x`` keeps solving the training task on its own, so the low-rank update has
little pressure to grow. CI ("cutting the incumbent") applies dropout with rate ``p``
(default 0.1) to that path during training, so the adapter must learn to carry the
signal itself. It is active in training mode only: in ``eval()`` the layer computes
exactly what plain LoRA computes.

How: a forward hook on each LoRA layer's ``base_layer`` (``nn.Linear``, GPT-2's
``Conv1D``) replaces its output ``W_pre·x + b`` by ``dropout_p(W_pre·x) + b``. The hook
changes no module names, parameters or state-dict keys, so the saved adapter is a plain
PEFT adapter and DDP/FSDP see the model they expect.

- **Bias**: the bias is *not* dropped. It is an input-independent offset, not part of
  the path that maps the (triggered) input through ``W_pre``; dropping it would only add
  noise. The hook subtracts it, drops ``W_pre·x`` and adds it back.
- **Scaling**: standard inverted dropout — kept entries are scaled by ``1/(1−p)`` so the
  expected training-time output equals the eval-time output. On CPU the mask comes from
  :func:`drop_mask` (one 31-bit random integer per two elements instead of one
  ``bernoulli_`` double per element: the RNG is most of CPU dropout's cost, and the
  rate is p to within 1.6e-5); on GPUs PyTorch's fused dropout is used. Measured with
  ``bench/rora_overhead.py`` (MiniLM, batch 32 × 128, 2 cores; bench/README.md): one mask
  of 32×128×384 costs 3.7 ms against F.dropout's 10.7 ms, and a whole RoRA step is 6 %
  slower with F.dropout (per-step ratio IQR 1.05–1.12) — the difference between RoRA's
  overhead over LoRA staying under 10 % (1.06×) or not (≈1.12×).
- **DoRA**: a DoRA layer computes ``m/‖W+sBA‖_c ⊙ (W+sBA)x + b`` as
  ``base_layer(x) + (m/‖·‖_c − 1)⊙W·x' + m/‖·‖_c ⊙ sBAx'``. CI drops the first term, the
  frozen ``W_pre·x`` that PEFT gets from ``base_layer``. The magnitude correction
  ``(m/‖·‖_c − 1)⊙W·x'`` belongs to the trainable DoRA update: when ``lora_dropout > 0``
  PEFT recomputes it from ``W`` directly (undropped by CI); with ``lora_dropout = 0``
  PEFT reuses the (dropped) base output for it, so CI then masks the whole
  magnitude-scaled base path. Either way the frozen direction ``W_pre·x`` is what CI cuts.
- Embedding LoRA layers are left alone (their "base path" is a table lookup).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spectra.errors import SpectraError


def lora_linear_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(name, layer)`` for every PEFT LoRA *linear* layer (``nn.Linear``/``Conv1D`` base).

    ``name`` is the module path relative to the wrapped transformers model (PEFT's
    ``base_model.model.`` prefix removed): the name PEFT saves and matches patterns against.
    """
    from peft.tuners.lora import Linear as LoraLinear

    from spectra.io.keys import strip_peft_prefix

    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield strip_peft_prefix(name), module


_RES = 32768  # mask resolution: the effective rate is round(p·2¹⁵)/2¹⁵


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """A boolean dropout mask (True = dropped) and the exact rate it was drawn with.

    CPU dropout spends most of its time in the random number generator (``bernoulli_``
    draws one double per element, single-threaded). Here one 31-bit integer from
    ``random_`` serves *two* elements: viewed as two int16 halves, the low half is uniform
    on [−2¹⁵, 2¹⁵) and the high half on [0, 2¹⁵), and each is compared with its own
    threshold so both drop with probability ``t/2¹⁵``, ``t = round(p·2¹⁵)`` (within 1.6e-5
    of p). About 2.5× cheaper than ``bernoulli_`` for the same mask.
    """
    n = 1
    for d in shape:
        n *= int(d)
    t = round(p * _RES)
    low = 2 * t - _RES  # P(low half < 2t − 2¹⁵) = 2t/2¹⁶ = t/2¹⁵
    thr = [low, t] if sys.byteorder == "little" else [t, low]  # (low half, high half) in memory order
    halves = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_().view(torch.int16).view(-1, 2)
    drop = (halves < torch.tensor(thr, dtype=torch.int16, device=device)).view(-1)[:n].view(shape)
    return drop, t / _RES


class _CPUBaseDropout(torch.autograd.Function):
    """``where(drop, b, (y − b)·s + b)`` with the mask from :func:`drop_mask`.

    ``s = 1/(1 − p_eff)`` for the rate the mask was actually drawn with, so the
    expectation is unchanged. The bias is passed through (never dropped) and must be
    frozen; only the boolean mask is kept for backward.
    """

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, bias: torch.Tensor | None, p: float) -> torch.Tensor:
        drop, p_eff = drop_mask(y.shape, p, y.device)
        scale = 1.0 / (1.0 - p_eff)
        ctx.save_for_backward(drop)
        ctx.scale = scale
        if bias is None:
            return y.mul(scale).masked_fill_(drop, 0.0)
        b = bias.to(y.dtype)
        return torch.where(drop, b, torch.add(b * (1.0 - scale), y, alpha=scale))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (drop,) = ctx.saved_tensors
        return grad.mul(ctx.scale).masked_fill_(drop, 0.0), None, None


def base_path_dropout(output: torch.Tensor, bias: torch.Tensor | None, p: float, native: bool = False) -> torch.Tensor:
    """``dropout_p(output − bias) + bias`` (training-mode dropout of the base path only);
    ``native`` uses ``F.dropout`` on every device (the benchmark's comparison point)."""
    if p == 0.0:
        return output
    trainable_bias = bias is not None and bias.requires_grad
    if output.device.type == "cpu" and not trainable_bias and not native:
        return _CPUBaseDropout.apply(output, bias, p)
    # GPUs: the fused native dropout kernel is the fast path
    if bias is None:
        return F.dropout(output, p, training=True)
    bias = bias.to(output.dtype)
    return F.dropout(output - bias, p, training=True) + bias


class BaseDropoutHook:
    """Forward hook ``output -> dropout_p(output − b) + b`` on a frozen base layer (training only)."""

    def __init__(self, p: float, native: bool = False) -> None:
        if not 0.0 <= p < 1.0:
            raise SpectraError(f"--base-dropout {p!r}: CI's dropout rate p must be in [0, 1)")
        self.p = float(p)
        self.native = native

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or self.p == 0.0:
            return None  # keep the output unchanged
        return base_path_dropout(output, getattr(module, "bias", None), self.p, self.native)


@dataclass
class BaseDropout:
    """Handle on the CI hooks attached to a model; :meth:`remove` detaches them."""

    p: float
    modules: list[str] = field(default_factory=list)
    _handles: list[Any] = field(default_factory=list, repr=False)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> BaseDropout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def attach_base_dropout(model: nn.Module, p: float = 0.1, native: bool = False) -> BaseDropout:
    """Attach CI to every LoRA linear layer of the PEFT ``model``.

    Parameters:
        model: a ``PeftModel`` (or a model holding PEFT LoRA layers).
        p: dropout rate on the base path, in ``[0, 1)``; ``0`` attaches nothing.
        native: use ``F.dropout`` on the CPU too (instead of :func:`drop_mask`).

    Returns:
        :class:`BaseDropout` listing the hooked modules (``.remove()`` undoes it).
    """
    hook = BaseDropoutHook(p, native)
    handle = BaseDropout(p=hook.p)
    if hook.p == 0.0:
        return handle
    for name, layer in lora_linear_layers(model):
        base = layer.get_base_layer()
        handle._handles.append(base.register_forward_hook(hook))
        handle.modules.append(name)
    if not handle.modules:
        raise SpectraError("CI: the model has no LoRA linear layer to attach base-path dropout to")
    return handle
