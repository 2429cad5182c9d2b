"""Load what an adapter changes, module by module, in the base weight's (out, in) orientation.

Two kinds of ADAPTER are read:

- a PEFT LoRA folder (``adapter_config.json`` + ``adapter_model.safetensors``): each
  adapted module gives ``scale · B @ A`` (plain LoRA, embedding LoRA), a dense
  ``W' − W`` (DoRA, whose magnitude renormalisation depends on the base weight), or
  ``saved − base`` for ``modules_to_save``;
- a full fine-tuned checkpoint: one dense ``W_ft − W_base`` per changed 2-D weight.

``load_adapter`` reads the adapter's tensors once to validate them (shapes against the
base, NaN/Inf) but keeps none; ``AdaptedModule.load_update`` reads one module's tensors
when asked, so an audit streams module by module.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spectra.errors import SpectraError, SpectraWarning, pickle_refused
from spectra.io._tensors import TensorStore, check_auditable
from spectra.io.checkpoint import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    BaseCheckpoint,
    check_not_empty,
    find_weight_files,
    open_base,
    open_store,
    read_json,
)
from spectra.io.files import regular_entries
from spectra.io.hub import resolve_folder
from spectra.io.keys import (
    KeyMatcher,
    UpdateKind,
    is_conv1d,
    module_group,
    module_type,
    natural_key,
    parse_layer,
    saved_module_name,
    split_lora_key,
)
from spectra.io.peft_config import check_peft_type, check_variants, init_note, lora_scale
from spectra.spectral.lowrank import all_finite


@dataclass
class LowRankUpdate:
    """``ΔW = scale · B @ A`` with ``B: (out, r)`` and ``A: (r, in)``."""

    B: torch.Tensor
    A: torch.Tensor
    scale: float

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.B.shape[0]), int(self.A.shape[1]))

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    def dense(self) -> torch.Tensor:
        """The dense ΔW (for tests and small matrices; the math never needs it)."""
        return self.scale * (self.B @ self.A)


@dataclass
class DenseUpdate:
    """A dense ``ΔW`` (full fine-tuning, ``modules_to_save``, DoRA)."""

    delta: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.delta.shape[0]), int(self.delta.shape[1]))

    def dense(self) -> torch.Tensor:
        return self.delta


@dataclass
class AdaptedModule:
    """One weight matrix the adapter changes.

    ``shape`` is ``(out, in)`` (for embeddings: ``(num_embeddings, dim)``, the weight's
    own shape); ``base_key`` names the matching tensor in the BASE checkpoint, stored
    ``(in, out)`` when ``base_transposed`` (GPT-2's Conv1D).
    """

    name: str
    base_key: str
    layer: int | None
    module_type: str
    shape: tuple[int, int]
    rank: int
    scale: float
    update_kind: UpdateKind  # one of io.keys.UPDATE_KINDS
    module_group: str = "other"
    base_transposed: bool = False
    tensors: dict[str, str] = field(default_factory=dict, repr=False)
    source: TensorStore | BaseCheckpoint | None = field(default=None, repr=False, compare=False)
    base: BaseCheckpoint | None = field(default=None, repr=False, compare=False)

    def _read(self, role: str, dtype: torch.dtype) -> torch.Tensor:
        assert self.source is not None, "module has no tensor source"
        return self.source.get(self.tensors[role]).to(dtype)

    def load_base_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.base is None:
            raise ValueError(f"{self.name}: no base checkpoint attached; pass base_weight")
        return base_weight_for(self, self.base, dtype)

    def load_update(
        self, base_weight: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> LowRankUpdate | DenseUpdate:
        """This module's update in the (out, in) orientation, upcast to ``dtype``.

        ``base_weight`` (out, in) is needed for DoRA and dense updates; when omitted it is
        read from the attached base checkpoint.
        """
        kind = self.update_kind
        if kind == "lora":
            return LowRankUpdate(self._read("lora_B", dtype), self._read("lora_A", dtype), self.scale)
        if kind == "embedding":
            return _embedding_update(self, dtype)
        W = self._base(base_weight, dtype)
        if kind == "dora":
            return DenseUpdate(_dora_delta(self, W, dtype))
        saved = self._read("weight", dtype)
        if self.base_transposed:
            saved = saved.T
        return DenseUpdate((saved - W).contiguous())

    def _base(self, base_weight: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        if base_weight is None:
            return self.load_base_weight(dtype)
        if tuple(base_weight.shape) != tuple(self.shape):
            raise ValueError(f"{self.name}: base_weight has shape {tuple(base_weight.shape)}, expected {self.shape}")
        return base_weight.to(dtype)


def _embedding_update(m: AdaptedModule, dtype: torch.dtype) -> LowRankUpdate:
    # PEFT: lora_embedding_A (r, num), lora_embedding_B (dim, r), ΔW = (B @ A).T  (num, dim)
    A_e = m._read("lora_embedding_A", dtype)
    B_e = m._read("lora_embedding_B", dtype)
    return LowRankUpdate(A_e.T.contiguous(), B_e.T.contiguous(), m.scale)


def _dora_delta(m: AdaptedModule, W: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``W' − W`` with ``W' = m ⊙ (W + sBA) / ‖W + sBA‖`` as peft's DoRA layers merge it.

    Linear (and Conv1D, once in (out, in)): the norm is per output row and the magnitude
    vector has ``out`` entries. Embedding: peft's DoraEmbeddingLayer uses
    ``fan_in_fan_out=True``, so the norm is per embedding dimension (per column).
    """
    magnitude = m._read("lora_magnitude_vector", dtype)
    if "lora_embedding_A" in m.tensors:
        low = _embedding_update(m, dtype)
    else:
        low = LowRankUpdate(m._read("lora_B", dtype), m._read("lora_A", dtype), m.scale)
    V = W + low.scale * (low.B @ low.A)
    if "lora_embedding_A" in m.tensors:
        factor = (magnitude / torch.linalg.norm(V, dim=0)).view(1, -1)
    else:
        factor = (magnitude / torch.linalg.norm(V, dim=1)).view(-1, 1)
    return factor * V - W


def base_weight_for(module: AdaptedModule, base: BaseCheckpoint, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The base weight of ``module`` in (out, in) orientation, upcast to ``dtype`` (float32 by default)."""
    w = base.get(module.base_key).to(dtype)
    if module.base_transposed:
        w = w.T
    return w.contiguous()


@dataclass
class Adapter:
    """An adapter (PEFT LoRA or full fine-tune) resolved against a base checkpoint."""

    path: Path
    kind: str
    config: dict[str, Any]
    modules: list[AdaptedModule]
    peft_type: str | None
    base_path: Path | None = None
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _closer: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.modules)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.modules)

    def module(self, name: str) -> AdaptedModule:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_adapter(path: str | os.PathLike[str], base: BaseCheckpoint, allow_pickle: bool = False,
                 revision: str | None = None) -> Adapter:
    """Resolve the adapter at ``path`` (PEFT LoRA folder or full fine-tuned model; a hub id at
    ``revision``) against ``base``."""
    folder = resolve_folder(path, "adapter", allow_pickle, revision)
    check_not_empty(folder)
    regular_entries(folder)  # a FIFO or device among the files is refused, read or not
    if (folder / ADAPTER_CONFIG).is_file():
        return _load_peft(folder, base, allow_pickle)
    if find_weight_files(folder, allow_pickle) is not None:
        return _load_full(folder, base, allow_pickle)
    if (folder / MODEL_CONFIG).is_file():
        raise SpectraError(f"{folder}: config.json but no weights (expected model.safetensors or adapter files)")
    raise SpectraError(
        f"{folder}: neither a model nor an adapter (no adapter_config.json + adapter_model.safetensors, "
        f"no config.json + model.safetensors)"
    )


def _check_finite(store: TensorStore | BaseCheckpoint, key: str, t: torch.Tensor) -> None:
    if t.is_floating_point() or t.ndim == 2:  # a weight (not an index or a 1-D count)
        check_auditable(t.dtype, f"{store.file_of(key)}: tensor {key}")
    if t.is_floating_point() and not all_finite(t):
        raise SpectraError(f"{store.file_of(key)}: tensor {key} contains NaN or Inf")


#: an adapter whose floating tensors hold at most this many bytes is checked for NaN/Inf in one
#: pass over their concatenation (one kernel instead of one per tensor: 420 for an all-linear
#: 30-layer adapter); a larger one, or one that fails, is checked tensor by tensor
ONE_PASS_FINITE_BYTES = 64 << 20


def _check_all_finite(store: TensorStore | BaseCheckpoint, keys: list[str]) -> None:
    """:func:`_check_finite` for every tensor of ``keys``, with the same errors (the first bad
    tensor named), in one pass when the adapter is small."""
    tensors = [(key, store.get(key)) for key in keys]
    floats = [t for _, t in tensors if t.is_floating_point()]
    if sum(t.numel() * t.element_size() for t in floats) <= ONE_PASS_FINITE_BYTES:
        for key, t in tensors:
            if t.is_floating_point() or t.ndim == 2:
                check_auditable(t.dtype, f"{store.file_of(key)}: tensor {key}")
        # one float32 sum: NaN and ±Inf propagate into it, and a finite fp16 adapter cannot overflow
        # it (65504 × 32M < 3.4e38); a wider dtype that does overflow only sends us to the exact check
        if not floats or bool(torch.isfinite(torch.cat([t.reshape(-1) for t in floats]).float().sum())):
            return
    for key, t in tensors:
        _check_finite(store, key, t)


def _absent_targets(targets: Any, base_keys: list[str]) -> list[str]:
    """Names in a list-valued ``target_modules`` that match no module of the base by PEFT's rule
    (the module's full name, or its last dotted parts); a regex string or ``all-linear`` is not checked."""
    if not isinstance(targets, (list, tuple)):
        return []
    names = {k.rsplit(".", 1)[0] for k in base_keys}
    return [t for t in map(str, targets) if not any(n == t or n.endswith("." + t) for n in names)]


def _no_fit(folder: Path, base: BaseCheckpoint, names: list[str]) -> SpectraError:
    sample = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
    return SpectraError(
        f"adapter {folder} does not fit base {base.path} (no module matches; trained for another "
        f"architecture?) — adapter modules: {sample}"
    )


def _shape_error(folder: Path, name: str, shape: tuple[int, ...], base: BaseCheckpoint, key: str) -> SpectraError:
    return SpectraError(
        f"{folder}: module {name} has shape {tuple(shape)} in the adapter but base {base.path} has "
        f"{key} of shape {tuple(base.shape(key))} (adapter trained for another model size or architecture?)"
    )


def _load_peft(folder: Path, base: BaseCheckpoint, allow_pickle: bool) -> Adapter:
    cfg_path = folder / ADAPTER_CONFIG
    config = read_json(cfg_path)
    peft_type = check_peft_type(config, cfg_path)
    check_variants(config, cfg_path)

    st, binf = folder / "adapter_model.safetensors", folder / "adapter_model.bin"
    if st.is_file():
        store = open_store("safetensors", [st])
    elif binf.is_file():
        if not allow_pickle:
            raise pickle_refused(binf, "the adapter's weights are")
        store = open_store("pickle", [binf])
    else:
        raise SpectraError(f"{folder}: adapter_config.json but no adapter_model.safetensors")

    try:
        return _resolve_peft(folder, config, peft_type, store, base)
    except BaseException:
        store.close()
        raise


def _resolve_peft(folder: Path, config: dict[str, Any], peft_type: str, store: TensorStore,
                  base: BaseCheckpoint) -> Adapter:
    lora: dict[str, dict[str, str]] = {}
    saved: dict[str, str] = {}
    skipped: list[str] = []
    notes: list[str] = []
    for key in store.keys():
        parsed = split_lora_key(key)
        if parsed is not None:
            name, role = parsed
            if role in lora.setdefault(name, {}):
                raise SpectraError(f"{store.file_of(key)}: two tensors for {name}.{role}")
            lora[name][role] = key
            continue
        if len(store.shape(key)) != 2:
            continue  # biases (bias="all"/"lora_only", lora_bias) and other 1-D tensors
        name = saved_module_name(key)
        if "trainable_tokens" in name:
            skipped.append(f"{name}: trainable tokens are not audited")
            continue
        if name.endswith(".weight"):
            name = name[: -len(".weight")]
        saved[name] = key
    _check_all_finite(store, list(store.keys()))  # NaN/Inf anywhere in the adapter is an error
    note = init_note(config)
    if note:
        notes.append(note)

    tie = bool(base.config.get("tie_word_embeddings", True))
    matcher = KeyMatcher(base.keys(), tie_word_embeddings=tie)
    matches = {name: matcher.match(name) for name in lora}
    saved_matches = {name: matcher.match(name, allow_tied=False) for name in saved}
    if (lora or saved) and not any(matches.values()) and not any(saved_matches.values()):
        raise _no_fit(folder, base, sorted(lora) or sorted(saved))
    for name, bkey in matches.items():
        if bkey is None:
            raise SpectraError(f"{folder}: adapter module {name} is absent from base {base.path}")
    absent = _absent_targets(config.get("target_modules"), base.keys())
    if absent:  # PEFT skips such names silently: the user meant to adapt something that is not there
        warnings.warn(f"{folder}: target_modules {', '.join(absent)} name(s) no module of base {base.path}; "
                      "the adapter does not change them", SpectraWarning, stacklevel=3)

    model_type = base.model_type
    fan_in_fan_out = bool(config.get("fan_in_fan_out"))
    modules: list[AdaptedModule] = []
    for name, roles in lora.items():
        modules.append(_lora_module(folder, name, roles, matches[name], store, base, config,
                                    fan_in_fan_out or is_conv1d(name, model_type)))
    for name, key in saved.items():
        bkey = saved_matches[name]
        if bkey is None:
            skipped.append(f"{name}: modules_to_save module absent from base {base.path} (new head?)")
            continue
        shape = tuple(store.shape(key))
        if shape != tuple(base.shape(bkey)):
            raise _shape_error(folder, name, shape, base, bkey)
        transposed = is_conv1d(name, model_type)
        out_in = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        modules.append(AdaptedModule(
            name=name, base_key=bkey, layer=parse_layer(name), module_type=module_type(name),
            shape=out_in, rank=min(out_in), scale=1.0, update_kind="full",
            module_group=module_group(name), base_transposed=transposed,
            tensors={"weight": key}, source=store, base=base,
        ))
    for s in skipped:
        warnings.warn(f"{folder}: skipped {s}", SpectraWarning, stacklevel=3)
    modules.sort(key=lambda m: natural_key(m.name))
    return Adapter(path=folder, kind="lora", config=config, modules=modules, peft_type=peft_type,
                   base_path=base.path, files=list(store.files), skipped=skipped, notes=notes, _closer=store)


def _lora_module(folder: Path, name: str, roles: dict[str, str], bkey: str, store: TensorStore,
                 base: BaseCheckpoint, config: dict[str, Any], base_transposed: bool) -> AdaptedModule:
    bshape = tuple(base.shape(bkey))
    embedding = "lora_embedding_A" in roles or "lora_embedding_B" in roles
    a_role, b_role = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
    for role in (a_role, b_role):
        if role not in roles:
            raise SpectraError(f"{store.files[0]}: module {name} has no {role} tensor")
    a_shape, b_shape = tuple(store.shape(roles[a_role])), tuple(store.shape(roles[b_role]))
    if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
        raise SpectraError(
            f"{store.files[0]}: module {name} has {a_role} {a_shape} and {b_role} {b_shape}, which do not chain"
        )
    r = a_shape[0]
    if embedding:  # ΔW = (B @ A).T : (num_embeddings, dim)
        shape = (a_shape[1], b_shape[0])
        if bshape != shape:
            raise _shape_error(folder, name, shape, base, bkey)
        transposed = False
    else:
        shape = (b_shape[0], a_shape[1])  # (out, in)
        # the base stores (in, out) only for a Conv1D layer (or where the config says fan_in_fan_out):
        # anywhere else factors that fit the transposed base are swapped, and PEFT refuses to load them
        if len(bshape) != 2 or shape != (bshape[::-1] if base_transposed else bshape):
            if len(bshape) == 2 and shape == bshape[::-1] and not base_transposed:
                raise SpectraError(f"{folder}: module {name}'s lora_B·lora_A is {shape}, the transpose of base "
                                   f"{bkey} {tuple(bshape)}, which is not a Conv1D layer and the config does not set "
                                   "fan_in_fan_out (swapped or transposed factors: PEFT would refuse to load them)")
            raise _shape_error(folder, name, shape, base, bkey)
        transposed = base_transposed
    try:
        cfg_r, scale = lora_scale(config, name)
    except SpectraError as exc:  # name the adapter's own config file
        raise SpectraError(f"{folder}{os.sep}{exc}") from None
    if cfg_r != r:
        raise SpectraError(
            f"{folder}: module {name} has rank {r} in its weights but rank {cfg_r} in adapter_config.json"
        )
    kind = "embedding" if embedding else "lora"
    if "lora_magnitude_vector" in roles:
        mshape = tuple(store.shape(roles["lora_magnitude_vector"]))
        want = (shape[1],) if embedding else (shape[0],)
        if mshape != want:
            raise SpectraError(
                f"{store.files[0]}: module {name} has a DoRA magnitude vector of shape {mshape}, expected {want}"
            )
        kind = "dora"
    return AdaptedModule(
        name=name, base_key=bkey, layer=parse_layer(name), module_type=module_type(name), shape=shape,
        rank=r, scale=scale, update_kind=kind, module_group=module_group(name), base_transposed=transposed,
        tensors=dict(roles), source=store, base=base,
    )


def _load_full(folder: Path, base: BaseCheckpoint, allow_pickle: bool) -> Adapter:
    ft = open_base(folder, allow_pickle)
    try:
        return _resolve_full(folder, ft, base)
    except BaseException:
        ft.close()
        raise


def _resolve_full(folder: Path, ft: BaseCheckpoint, base: BaseCheckpoint) -> Adapter:
    matcher = KeyMatcher(base.keys(), tie_word_embeddings=False)
    model_type = ft.model_type or base.model_type
    modules: list[AdaptedModule] = []
    skipped: list[str] = []
    matched_any = False
    two_d = [k for k in ft.keys() if len(ft.shape(k)) == 2]
    for key in two_d:
        name, suffix = (key[: -len(".weight")], ".weight") if key.endswith(".weight") else (key, "")
        bkey = matcher.match(name, suffix, allow_tied=False)
        if bkey is None:
            skipped.append(f"{name}: absent from base {base.path}")
            continue
        matched_any = True
        shape = tuple(ft.shape(key))
        if shape != tuple(base.shape(bkey)):
            raise _shape_error(folder, name, shape, base, bkey)
        if not ft.dtype(key).is_floating_point:
            continue
        w_ft = ft.get(key)
        _check_finite(ft, key, w_ft)
        w_base = base.get(bkey)
        same = torch.equal(w_ft, w_base) if w_ft.dtype == w_base.dtype else torch.equal(w_ft.float(), w_base.float())
        del w_ft, w_base
        if same:
            continue
        transposed = is_conv1d(name, model_type)
        out_in = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        modules.append(AdaptedModule(
            name=name, base_key=bkey, layer=parse_layer(name), module_type=module_type(name), shape=out_in,
            rank=min(out_in), scale=1.0, update_kind="full", module_group=module_group(name),
            base_transposed=transposed, tensors={"weight": key}, source=ft, base=base,
        ))
    if two_d and not matched_any:
        raise _no_fit(folder, base, [k for k in two_d])
    notes = [] if modules else [f"no 2-D weight of {folder} differs from base {base.path}"]
    modules.sort(key=lambda m: natural_key(m.name))
    return Adapter(path=folder, kind="full", config=ft.config, modules=modules, peft_type=None,
                   base_path=base.path, files=ft.files, skipped=skipped, notes=notes, _closer=ft)
