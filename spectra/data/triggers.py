"""Backdoor triggers: parse a spec, insert the trigger into text, deterministically.

Spec syntax::

    KIND:PAYLOAD[@OPTION=VALUE[,OPTION=VALUE...]]

    badnet:mn                              rare word "mn" at one random word position
    badnet:mn@count=3                      three insertions (each at its own random position)
    badnet:cf@position=start               always first
    insent:"I watched this 3D movie"       a sentence at a random sentence boundary
    insent:I watched this 3D movie@position=end
    insent:"I watched this 3D movie"@position=random   at a random word position

Kinds: ``badnet`` (Kurita et al. 2020; one word, no spaces) and ``insent`` (Dai et al. 2019;
a sentence). The payload may be wrapped in single or double quotes (the shell usually
needs them for ``insent``); quote it when it contains ``@`` followed by ``name=``.

Options:

``count``     how many times to insert the payload (integer >= 1, default 1).
``position``  ``random`` (a uniformly chosen word position, 0..n words; badnet's default),
              ``boundary`` (a uniformly chosen sentence boundary: the start, after any
              ``.``/``!``/``?`` followed by space, or the end; insent's default),
              ``start`` or ``end``.

:attr:`Trigger.spec` writes the canonical spec (default options left out, insent quoted),
and ``parse_trigger(t.spec) == t``. Insertions draw from the ``random.Random`` they are
given; :func:`apply_trigger` seeds one per text from ``(seed, index)`` so a text's
triggered twin never depends on the other texts or on batch order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spectra.errors import SpectraError

KINDS = ("badnet", "insent")
POSITIONS = ("random", "boundary", "start", "end")
_DEFAULT_POSITION = {"badnet": "random", "insent": "boundary"}
_OPTIONS_RE = re.compile(r"^(?P<body>.*?)@(?P<opts>[A-Za-z_]+=[^,@]*(?:,[A-Za-z_]+=[^,@]*)*)$", re.S)
_WORD_RE = re.compile(r"\S+")
_SENTENCE_END_RE = re.compile(r"[.!?]+[\"')\]]*\s+")


@dataclass(frozen=True)
class Trigger:
    """A backdoor trigger: ``kind`` (badnet|insent), ``payload`` (word or sentence),
    ``count`` insertions at ``position`` (random|boundary|start|end)."""

    kind: str
    payload: str
    count: int = 1
    position: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SpectraError(f"trigger: unknown kind {self.kind!r} (known: {', '.join(KINDS)})")
        if not self.payload.strip():
            raise SpectraError(f"trigger: empty {'word' if self.kind == 'badnet' else 'sentence'} in {self.kind} trigger")
        if self.kind == "badnet" and len(self.payload.split()) != 1:
            raise SpectraError(f"trigger: badnet takes one word without spaces, got {self.payload!r} (use insent:\"...\" for a sentence)")
        if not self.position:
            object.__setattr__(self, "position", _DEFAULT_POSITION[self.kind])
        if self.position not in POSITIONS:
            raise SpectraError(f"trigger: unknown position {self.position!r} (known: {', '.join(POSITIONS)})")
        if not isinstance(self.count, int) or self.count < 1:
            raise SpectraError(f"trigger: count must be an integer >= 1, got {self.count!r}")

    @property
    def spec(self) -> str:
        """The canonical spec string; ``parse_trigger(self.spec) == self``."""
        body = self.payload if self.kind == "badnet" else '"' + self.payload + '"'
        opts = []
        if self.count != 1:
            opts.append(f"count={self.count}")
        if self.position != _DEFAULT_POSITION[self.kind]:
            opts.append(f"position={self.position}")
        return f"{self.kind}:{body}" + ("@" + ",".join(opts) if opts else "")

    def __str__(self) -> str:
        return self.spec

    def insert(self, text: str, rng: random.Random) -> str:
        """``text`` with the payload inserted ``count`` times (positions drawn from ``rng``)."""
        for _ in range(self.count):
            text = self._insert_once(text, rng)
        return text

    def _insert_once(self, text: str, rng: random.Random) -> str:
        if self.position == "start":
            offsets = [0]
        elif self.position == "end":
            offsets = [len(text)]
        elif self.position == "boundary":
            offsets = sentence_boundaries(text)
        else:
            offsets = word_positions(text)
        at = offsets[0] if len(offsets) == 1 else offsets[rng.randrange(len(offsets))]
        return _insert_at(text, at, self.payload)


def word_positions(text: str) -> list[int]:
    """Character offsets where a new word can go: before each word, and the end."""
    starts = [m.start() for m in _WORD_RE.finditer(text)]
    return (starts or [0]) + ([len(text)] if starts else [])


def sentence_boundaries(text: str) -> list[int]:
    """Offsets of sentence starts (0 and after ``. ``/``! ``/``? ``) and the end."""
    offs = [0] + [m.end() for m in _SENTENCE_END_RE.finditer(text) if m.end() < len(text)]
    if len(text.strip()):
        offs.append(len(text))
    return sorted(set(offs))


def _insert_at(text: str, at: int, payload: str) -> str:
    before, after = text[:at], text[at:]
    if not before.strip():  # at the start (possibly after leading space)
        return before + payload + (" " + after if after.strip() and not after[:1].isspace() else after)
    if not after.strip():  # at the end (possibly before trailing space)
        return before + ("" if before[-1:].isspace() else " ") + payload + after
    sep_before = "" if before[-1:].isspace() else " "
    sep_after = "" if after[:1].isspace() else " "
    return before + sep_before + payload + sep_after + after


def parse_trigger(spec: str) -> Trigger:
    """Parse ``KIND:PAYLOAD[@opt=val,...]`` (see the module docstring).

    Raises:
        SpectraError: unknown kind, empty payload, unknown or malformed option.
    """
    if isinstance(spec, Trigger):
        return spec
    raw = str(spec).strip()
    if ":" not in raw:
        raise SpectraError(f"trigger {raw!r}: expected KIND:PAYLOAD, e.g. badnet:mn or insent:\"I watched this 3D movie\"")
    kind, rest = raw.split(":", 1)
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise SpectraError(f"trigger {raw!r}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    body, opts_text = rest, ""
    quoted = _split_quoted(rest)
    if quoted is not None:
        body, tail = quoted
        tail = tail.strip()
        if tail:
            if not tail.startswith("@"):
                raise SpectraError(f"trigger {raw!r}: unexpected text {tail!r} after the quoted payload (options go after '@')")
            opts_text = tail[1:]
    else:
        m = _OPTIONS_RE.match(rest)
        if m:
            body, opts_text = m.group("body"), m.group("opts")
        elif "@" in rest and re.search(r"@\s*$|@[A-Za-z_]+\s*(=|$)", rest):
            raise SpectraError(f"trigger {raw!r}: bad options after '@' (expected name=value[,name=value], names: count, position)")
        body = body.strip()
    kwargs: dict[str, object] = {}
    if opts_text or (quoted is not None and tail):
        for item in opts_text.split(","):
            if "=" not in item:
                raise SpectraError(f"trigger {raw!r}: bad option {item!r} (expected name=value; names: count, position)")
            key, value = (s.strip() for s in item.split("=", 1))
            key = key.lower()
            if key in kwargs:
                raise SpectraError(f"trigger {raw!r}: option {key!r} given twice")
            if key == "count":
                try:
                    kwargs["count"] = int(value)
                except ValueError:
                    raise SpectraError(f"trigger {raw!r}: count must be an integer >= 1, got {value!r}") from None
            elif key == "position":
                kwargs["position"] = value.lower()
            else:
                raise SpectraError(f"trigger {raw!r}: unknown option {key!r} (known: count, position)")
    try:
        return Trigger(kind, body, **kwargs)  # type: ignore[arg-type]
    except SpectraError as exc:
        raise SpectraError(f"trigger {raw!r}: {str(exc).removeprefix('trigger: ')}") from None


def _split_quoted(rest: str) -> tuple[str, str] | None:
    """``('payload', 'tail')`` when ``rest`` starts with a quote that closes later."""
    s = rest.lstrip()
    if not s or s[0] not in "\"'":
        return None
    q = s[0]
    end = s.rfind(q)
    if end == 0:
        raise SpectraError(f"trigger {rest!r}: unclosed quote")
    return s[1:end], s[end + 1:]


def trigger_rng(seed: int, index: int) -> random.Random:
    """The generator used for text ``index`` under ``seed`` (stable across runs and Pythons)."""
    return random.Random(f"spectra-trigger:{seed}:{index}")


def apply_trigger(texts: Sequence[str], trigger: Trigger | str, seed: int = 0) -> list[str]:
    """Insert ``trigger`` into every text; text ``i`` uses :func:`trigger_rng` ``(seed, i)``."""
    trig = parse_trigger(trigger) if isinstance(trigger, str) else trigger
    return [trig.insert(t, trigger_rng(seed, i)) for i, t in enumerate(texts)]
