"""Running a sequence classifier over texts: logits in input order, batched by length.

Also the one counter of texts longer than the truncation length (a trigger inserted past
the cut is invisible to the model, so every report that inserts triggers says how many).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from spectra.errors import SpectraError
from spectra.settings import EVAL_BATCH_SIZE, MAX_LENGTH


def predict_logits(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = EVAL_BATCH_SIZE,
    max_length: int = MAX_LENGTH,
    progress: bool | Callable[[int, int], None] | None = True,
) -> Any:
    """Logits ``(len(texts), num_labels)`` as float32 on the CPU, in the order of ``texts``.

    The model runs in eval mode under ``torch.no_grad`` (its previous training mode is
    restored), in batches of ``batch_size``, truncating to ``max_length`` tokens. Batches
    are formed from texts of similar length (sorted by character count, results put back in
    input order): padding is masked out, so a text's logits do not depend on its batch
    beyond float rounding, and short texts stop paying for the longest one in their batch.
    A rich progress bar on stderr when ``progress`` is True and there is more than one batch; a
    callable ``progress`` is called with ``(batches done, batches)`` instead (the CLI's bar on a
    terminal, lines with an ETA in a log, nothing under ``--quiet``).
    """
    import torch

    if batch_size < 1:
        raise SpectraError(f"batch size must be >= 1, got {batch_size}")
    texts = list(texts)
    max_length = effective_max_length(tokenizer, max_length)
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    was_training = bool(getattr(model, "training", False))
    model.eval()
    out: list[torch.Tensor] = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    n_batches = (len(texts) + batch_size - 1) // batch_size
    tick = progress if callable(progress) else None
    bar = _progress_bar(n_batches, "predicting") if progress is True and n_batches > 1 else None
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = [texts[i] for i in order[start:start + batch_size]]
                enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                logits = model(**enc).logits
                out.append(logits.detach().float().cpu())
                if bar is not None:
                    bar.advance()
                if tick is not None:
                    tick(start // batch_size + 1, n_batches)
    finally:
        if bar is not None:
            bar.close()
        if was_training:
            model.train()
    if not out:
        n = int(getattr(getattr(model, "config", None), "num_labels", 0) or 0)
        return torch.zeros((0, n), dtype=torch.float32)
    sorted_logits = torch.cat(out, dim=0)
    result = torch.empty_like(sorted_logits)
    result[torch.tensor(order, dtype=torch.long)] = sorted_logits
    return result


def effective_max_length(tokenizer: Any, max_length: int) -> int:
    """``max_length`` capped at the tokenizer's ``model_max_length`` when that is set
    (a longer input would overrun the model's position embeddings)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return min(max_length, limit)
    return max_length


def count_over_length(tokenizer: Any, texts: Sequence[str], max_length: int) -> int | None:
    """How many ``texts`` are longer than ``max_length`` tokens (capped at the model's limit);
    None when the tokenizer cannot tell."""
    if not texts:
        return 0
    try:
        ids = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
        return sum(1 for row in ids if len(row) > effective_max_length(tokenizer, max_length))
    except Exception:  # a tokenizer that cannot do this (e.g. a stub) is simply not checked
        return None


class _Bar:
    def __init__(self, total: int, label: str) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task(label, total=total)

    def advance(self) -> None:
        self._progress.advance(self._task)

    def close(self) -> None:
        self._progress.stop()


def _progress_bar(total: int, label: str) -> _Bar | None:
    try:
        return _Bar(total, label)
    except Exception:  # no rich / no terminal: run without a bar
        return None
