"""One look for every figure: the Agg backend, seaborn's whitegrid, stable colours."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """Import matplotlib with the non-interactive Agg backend (safe on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt


def save_figure(fig: Any, path: Any, dpi: int = 130) -> None:
    """Save and close, so long runs that draw many figures do not leak memory."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
