"""ONION (Qi et al. 2021, "ONION: A Simple and Effective Defense Against Textual Backdoor
Attacks"): an inference-time filter that deletes the words a language model finds out of place.

For a text of words ``w_1 … w_n`` and a causal language model, let ``p_0`` be the
perplexity of the whole text and ``p_i`` the perplexity with word ``i`` deleted. The word's
suspicion score is ``f_i = p_0 − p_i``: deleting an inserted trigger such as "mn" makes the
text much more fluent, so its ``f_i`` is large. ONION deletes every word with ``f_i ≥ t``
before the classifier sees the text — clean and triggered texts alike, since a defender
cannot tell them apart.

The threshold ``t``: Qi et al. take the lowest value that costs at most 2 points of clean
accuracy on a validation set; :func:`calibrate_threshold` does exactly that on clean
validation rows (no triggered data). Word splitting is on single spaces, as in the
authors' code. The language model here is whatever causal LM is given (the study uses
SmolLM2-135M, :func:`spectra.io.zoo.smollm2_path`; the paper used GPT-2).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectra.settings import EVAL_BATCH_SIZE, MAX_LENGTH

#: clean-accuracy loss the calibrated threshold may cost on validation data (Qi et al.: 2 points)
MAX_CA_DROP = 0.02


def _words(text: str) -> list[str]:
    return [w for w in text.strip().split(" ") if w]


def trigger_survives(text: str, payload: str) -> bool:
    """Whether every word of the trigger ``payload`` is still in ``text``, in order and adjacent
    (ONION deletes single words, so a trigger sentence can lose some of its words and not others)."""
    words, need = _words(text), _words(payload)
    return any(words[i:i + len(need)] == need for i in range(len(words) - len(need) + 1))


def _key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _append(path: Path, text: str) -> None:
    """Append ``text`` with one ``write`` on an O_APPEND descriptor: the kernel places each
    such write at the end of the file whole, so concurrent writers never splice records."""
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # regular files take it whole; a short write is finished, not lost
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


@dataclass
class Onion:
    """A perplexity-based word filter around a causal LM (model + tokenizer, loaded by the caller)."""

    model: Any
    tokenizer: Any
    batch_size: int = EVAL_BATCH_SIZE
    max_length: int = MAX_LENGTH
    #: JSON-lines file of every text's scores (by SHA-256 of the text), appended chunk by
    #: chunk: scoring a study's texts is ~27k LM passes (hours on one CPU thread), so a
    #: killed run resumes where it stopped. The scores depend on the text and the LM only,
    #: never on the classifier, so runs with the same LM may share one file (each chunk is
    #: one O_APPEND write, so two processes appending do not interleave records). Tied to
    #: one LM: name the file after it.
    store: Path | None = None
    #: texts scored per chunk (one append to ``store``, one ``log`` line)
    chunk: int = 64
    log: Callable[[str], None] | None = None
    _cache: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _loaded: bool = field(default=False, repr=False)
    _torn: bool = field(default=False, repr=False)

    @classmethod
    def load(cls, path: str, device: str = "cpu", **kwargs: Any) -> Onion:
        """An :class:`Onion` around the causal LM in ``path`` (float32, eval mode)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from spectra.io.model import progress_bars_off

        tokenizer = AutoTokenizer.from_pretrained(path)
        with progress_bars_off():  # the study's log is a file: a loading bar there is noise
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        return cls(model=model, tokenizer=tokenizer, **kwargs)

    def perplexities(self, texts: Sequence[str]) -> list[float]:
        """Perplexity of each text under the LM: exp of the mean next-token loss, every token
        scored after a BOS/EOS prefix (so one-word texts have a perplexity too)."""
        import torch

        tok = self.tokenizer
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else prefix
        out = [0.0] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids = [[prefix] + tok(texts[i], add_special_tokens=False)["input_ids"][: self.max_length - 1] for i in idx]
            width = max(len(r) for r in ids)
            batch = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for j, row in enumerate(ids):
                batch[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float().cpu()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:], reduction="none")
            m = mask[:, 1:].float()
            mean = (nll * m).sum(1) / m.sum(1).clamp(min=1)
            for j, i in enumerate(idx):
                out[i] = float(math.exp(min(float(mean[j]), 80.0)))
        return out

    def suspicion(self, texts: Sequence[str]) -> list[list[float]]:
        """``f_i = p_0 − p_i`` for every word of every text (cached per text, and in ``store``)."""
        self._load_store()
        todo = [t for t in dict.fromkeys(texts) if _key(t) not in self._cache]
        for c in range(0, len(todo), self.chunk):
            part = todo[c:c + self.chunk]
            variants: list[str] = []
            spans: list[tuple[str, int, int]] = []
            for text in part:
                words = _words(text)
                start = len(variants)
                variants.append(" ".join(words))
                variants += [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
                spans.append((text, start, len(variants)))
            ppl = self.perplexities(variants)
            fresh = {}
            for text, a, b in spans:
                p0 = ppl[a]
                fresh[_key(text)] = [p0 - p for p in ppl[a + 1:b]]
            self._cache.update(fresh)
            if self.store is not None:
                # end a line a kill cut short, so the next record stands alone
                records = ("\n" if self._torn else "") + "".join(
                    json.dumps({"text": k, "scores": v}) + "\n" for k, v in fresh.items())
                self._torn = False
                _append(Path(self.store), records)
            if self.log is not None:
                self.log(f"ONION: scored {c + len(part):,} of {len(todo):,} texts "
                         f"({len(variants):,} LM passes in this chunk)")
        return [list(self._cache[_key(t)]) for t in texts]

    def _load_store(self) -> None:
        """Read ``store`` once; a line cut short by a kill is ignored (it is scored again)."""
        if self._loaded or self.store is None:
            return
        self._loaded = True
        if not Path(self.store).exists():
            return
        text = Path(self.store).read_text(encoding="utf-8")
        self._torn = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                row = json.loads(line)
                self._cache[str(row["text"])] = [float(x) for x in row["scores"]]
            except (ValueError, KeyError, TypeError):
                continue

    def filter(self, texts: Sequence[str], threshold: float) -> list[str]:
        """The texts with every word whose suspicion is ≥ ``threshold`` deleted."""
        scores = self.suspicion(texts)
        kept = []
        for text, f in zip(texts, scores):
            words = _words(text)
            kept.append(" ".join(w for w, s in zip(words, f) if s < threshold))
        return kept


def calibrate_threshold(onion: Onion, accuracy: Callable[[list[str]], float], val_texts: Sequence[str],
                        max_drop: float = MAX_CA_DROP) -> dict[str, Any]:
    """The lowest threshold whose filtering costs at most ``max_drop`` accuracy on clean validation texts.

    Candidates are the distinct suspicion scores of the validation words (plus +∞, which
    deletes nothing); lower thresholds delete more words. ``accuracy(texts)`` scores the
    classifier on the validation rows in their order.

    Returns:
        ``{"threshold", "val_ca_unfiltered", "val_ca_filtered", "candidates_tried"}``.
    """
    texts = list(val_texts)
    base = accuracy(texts)
    scores = sorted({s for row in onion.suspicion(texts) for s in row})
    # a bisection over the sorted candidates: accuracy falls as the threshold falls (more
    # words deleted), close enough to monotone for the lowest admissible one to be found
    lo, hi = 0, len(scores)  # index into scores; len(scores) stands for +inf
    tried = 0
    best = math.inf
    best_ca = base
    while lo < hi:
        mid = (lo + hi) // 2
        t = scores[mid]
        ca = accuracy(onion.filter(texts, t))
        tried += 1
        if ca >= base - max_drop - 1e-12:
            best, best_ca, hi = t, ca, mid
        else:
            lo = mid + 1
    return {"threshold": best, "val_ca_unfiltered": base, "val_ca_filtered": best_ca, "candidates_tried": tried}
