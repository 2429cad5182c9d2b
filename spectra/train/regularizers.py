"""RoRA's Tr: keep the LoRA factors out of W_pre's top-k singular subspaces.

Luong & Chen (2026) observe that LoRA's update ``ΔW = s·B·A`` keeps its leading singular
vectors inside the top singular subspaces of the (possibly poisoned) base weight, where
it cannot override what the base learned. Tr penalises exactly that overlap::

    Tr = λ · Σ_modules ( ‖U_kᵀ B‖²_F + ‖A V_k‖²_F )

with ``U_k`` (out × k) and ``V_k`` (in × k) the top-k left/right singular vectors of the
module's frozen ``W_pre`` (k = 32, λ = 10 in the paper). ``U_kᵀB`` is k × r and ``A V_k``
is r × k, so the penalty costs ``O(k·r·(out + in))`` per module — nothing dense.

**The truncated basis matters.** With the full bases (k = min(out, in), square W) the
two terms are ``‖B‖²_F + ‖A‖²_F``: plain weight decay, with no preferred direction. Only a
truncated basis pushes the update *out of* W_pre's dominant directions.

**Normalisation across modules: a sum, not a mean.** The gradient of the penalty with
respect to one module's factors is ``2λ·U_kU_kᵀB`` and ``2λ·A V_kV_kᵀ``, whatever the
number of modules M. The task loss's gradient on one module does not scale with M
either. So with a sum the balance between "fit the task" and "leave W_pre's subspace"
inside each module — the thing λ sets — is the same whether two modules (BERT q,v of
one block) or 72 (all-linear on a 12-layer model) are adapted, and λ = 10 keeps the
meaning the paper's formula gives it (the formula is a sum). A mean would divide every
module's pull by M and silently weaken Tr as more modules are targeted. The price: the
logged *value* of the penalty grows with M; spectra also logs the mean subspace
overlap (a number in [0, 1]) to read it by.

With PiSSA/OLoRA the bases are those of the *original* ``W_pre`` (the inits rewrite the
base weight as ``W_pre − s·B₀A₀``; spectra undoes that before computing them). PiSSA
starts ``B₀, A₀`` *on* W_pre's top-r singular directions, so Tr pulls the factors out of
exactly the subspace PiSSA put them in — the two pursue opposite aims; the combination
runs, but read it as an experiment, not a recommendation.

The bases come from :func:`spectra.spectral.top_singular` (certified randomized top-k,
exact fallback), batched over same-shape weights and cached by content with
:class:`spectra.io.spectrum_cache.SpectrumCache`, and are registered on each LoRA layer as
*non-persistent* buffers ``rora_U``/``rora_V``: they move with ``model.to(device)`` and
never enter a checkpoint or the saved adapter.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spectra.errors import SpectraError
from spectra.settings import TOP_K

U_BUFFER = "rora_U"
V_BUFFER = "rora_V"


def subspace_penalty(B: Tensor, A: Tensor, U_k: Tensor, V_k: Tensor) -> Tensor:
    """``‖U_kᵀ B‖²_F + ‖A V_k‖²_F`` for one module (unweighted, float32 or wider).

    Parameters:
        B: LoRA ``B`` factor ``(out, r)``.
        A: LoRA ``A`` factor ``(r, in)``.
        U_k: ``(out, k)`` orthonormal top-k left singular vectors of ``W_pre``.
        V_k: ``(in, k)`` orthonormal top-k right singular vectors of ``W_pre``
            (``Vh[:k].T`` of an SVD).

    Returns:
        A 0-dim tensor, differentiable in ``B`` and ``A``. Half-precision factors are
        upcast to the bases' dtype so the squares do not overflow.
    """
    dtype = torch.promote_types(U_k.dtype, torch.float32)
    left = U_k.to(dtype).mT @ B.to(dtype)  # (k, r)
    right = A.to(dtype) @ V_k.to(dtype)  # (r, k)
    return left.square().sum() + right.square().sum()


def module_weight(layer: nn.Module) -> Tensor:
    """The frozen base weight of a PEFT LoRA layer in ``(out, in)`` orientation."""
    base = layer.get_base_layer()
    W = base.weight
    if getattr(layer, "fan_in_fan_out", False):  # GPT-2's Conv1D stores (in, out)
        W = W.T
    return W.detach()


def tensor_fingerprint(W: Tensor) -> str:
    """Content identity of a weight: sha256 of its bytes, dtype and shape."""
    t = W.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "tensor-sha256:" + digest.hexdigest()


@dataclass
class SubspacePenalty:
    """Tr over a model's LoRA layers: ``__call__()`` returns ``Σ (‖U_kᵀB‖² + ‖A V_k‖²)``.

    Call :func:`attach_subspace_bases` to build it. ``lam`` is *not* applied here (the
    trainer multiplies), so the same object serves tests and logging.
    """

    k: int
    modules: list[str] = field(default_factory=list)
    sigma_max: dict[str, float] = field(default_factory=dict)  # σ_max(W_pre) per module
    methods: dict[str, str] = field(default_factory=dict)  # how each basis was computed
    adapter_name: str = "default"
    _layers: list[nn.Module] = field(default_factory=list, repr=False)

    def terms(self) -> list[Tensor]:
        """One unweighted penalty per module, in :attr:`modules` order."""
        out = []
        for layer in self._layers:
            B = layer.lora_B[self.adapter_name].weight
            A = layer.lora_A[self.adapter_name].weight
            out.append(subspace_penalty(B, A, getattr(layer, U_BUFFER), getattr(layer, V_BUFFER)))
        return out

    def __call__(self) -> Tensor:
        terms = self.terms()
        if not terms:
            raise SpectraError("Tr: no LoRA module carries subspace bases")
        return torch.stack(terms).sum()

    def layers(self) -> list[tuple[str, nn.Module]]:
        return list(zip(self.modules, self._layers))

    def remove(self) -> None:
        """Drop the buffers from the layers (e.g. before handing the model to other code)."""
        for layer in self._layers:
            for name in (U_BUFFER, V_BUFFER):
                if name in layer._buffers:
                    del layer._buffers[name]
        self._layers.clear()
        self.modules.clear()


def attach_subspace_bases(
    model: nn.Module,
    k: int = TOP_K,
    *,
    cache: Any = None,
    fingerprint: Callable[[str, Tensor], str | None] | None = None,
    exact: bool = False,
    adapter_name: str = "default",
    layers: Sequence[tuple[str, nn.Module]] | None = None,
    weights: dict[str, Tensor] | None = None,
) -> SubspacePenalty:
    """Compute W_pre's top-k bases for every LoRA linear layer and register them as buffers.

    Parameters:
        model: a ``PeftModel``.
        k: subspace size; ``k > min(out, in)`` of some module → :class:`SpectraError`.
        cache: a :class:`~spectra.io.spectrum_cache.SpectrumCache` (or ``None`` for no cache).
        fingerprint: ``(module name, W) -> str`` content identity of the weight for the
            cache key; default: :func:`tensor_fingerprint` (hash of the bytes).
        exact: full SVD instead of the certified randomized top-k.
        adapter_name: which PEFT adapter's factors the penalty reads.
        layers: ``(name, lora layer)`` pairs to use (default: every LoRA linear layer).
        weights: ``W_pre`` per module name, ``(out, in)``, overriding the layer's current
            base weight — for PiSSA/OLoRA, whose init rewrites the base weight in place.

    Returns:
        :class:`SubspacePenalty` whose call gives the unweighted sum over modules.
    """
    from spectra.io.spectrum_cache import spectrum_key
    from spectra.spectral import TopK, top_singular
    from spectra.train.base_dropout import lora_linear_layers

    pairs = list(layers) if layers is not None else list(lora_linear_layers(model))
    if not pairs:
        raise SpectraError("Tr: the model has no LoRA linear layer")
    penalty = SubspacePenalty(k=k, adapter_name=adapter_name)
    method = "exact" if exact else "randomized"
    found: dict[str, tuple[Tensor, Tensor, Tensor, str]] = {}
    pending: dict[tuple[int, int], list[int]] = defaultdict(list)
    keys: dict[int, str] = {}
    weights = weights or {}

    def weight(i: int) -> Tensor:
        name, layer = pairs[i]
        return weights[name] if name in weights else module_weight(layer)

    for i, (name, layer) in enumerate(pairs):
        W = weight(i)
        m, n = W.shape
        if k > min(m, n):
            raise SpectraError(
                f"--top-k {k} is larger than module {name} allows ({m}x{n}: at most {min(m, n)})"
            )
        if cache is not None:
            fp = (fingerprint(name, W) if fingerprint is not None else None) or tensor_fingerprint(W)
            keys[i] = spectrum_key(fp + f"|{m}x{n}", k, str(torch.float32), method)
            hit = cache.get(keys[i])
            if hit is not None:
                found[name] = (hit.U, hit.S, hit.Vh, f"cache:{hit.method}")
                continue
        pending[(m, n)].append(i)
    for idx in pending.values():
        stack = torch.stack([weight(i).to("cpu", torch.float32) for i in idx])
        top = top_singular(stack, k, exact=exact)
        for j, i in enumerate(idx):
            how = "randomized-certified" if bool(top.certified[j]) else "exact"
            one = TopK(top.U[j].contiguous(), top.S[j].contiguous(), top.Vh[j].contiguous(),
                       top.certified[j], top.residual[j], how)
            if cache is not None:
                cache.put(keys[i], one)
            found[pairs[i][0]] = (one.U, one.S, one.Vh, how)
    for name, layer in pairs:
        U, S, Vh, how = found[name]
        device = module_weight(layer).device
        layer.register_buffer(U_BUFFER, U.to(device, torch.float32).contiguous(), persistent=False)
        layer.register_buffer(V_BUFFER, Vh.mT.to(device, torch.float32).contiguous(), persistent=False)
        penalty.modules.append(name)
        penalty._layers.append(layer)
        penalty.sigma_max[name] = float(S[0])
        penalty.methods[name] = how
    return penalty
