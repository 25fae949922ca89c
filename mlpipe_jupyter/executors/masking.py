"""Masking secret values in what a step writes: its log, its executed notebook, its error.

A step receives secrets as environment variables of its kernel (docs/secrets.md). If its
code prints one, or an exception's message holds one, the text is replaced by ``***``
before it is written anywhere: the step runner wraps the log it writes (``MaskingWriter``,
which holds back an incomplete line so a value split across two writes is still caught),
hands ``Masker.notebook`` to the papermill engine, which masks the notebook in place every
time papermill saves it (after each cell, and at the end), and masks the outcome's error.
Both the value and its escaped forms (``repr``, JSON) are masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TextIO

MASK = "***"


class Masker:
    """Replaces every secret value (and its escaped spellings) in text by ``***``."""

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if not value:
                continue
            forms |= {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
            stripped = value.strip()
            if stripped:
                forms.add(stripped)
        # longest first, so that a value containing another is masked whole
        self.forms = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.forms)

    @property
    def longest(self) -> int:
        return len(self.forms[0]) if self.forms else 0

    def text(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value (a notebook, an output) with every string masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value

    def notebook(self, nb: Any) -> None:
        """Mask a notebook's cell outputs in place (stream text, results, errors and
        tracebacks); sources are the step's own code and hold no values."""
        for cell in nb.get("cells", []):
            for index, output in enumerate(cell.get("outputs", []) or []):
                for key in list(output.keys()):
                    if key in ("output_type", "execution_count", "metadata"):
                        continue
                    masked = self.value(output[key])
                    if masked != output[key]:
                        output[key] = masked
                cell["outputs"][index] = output


class MaskingWriter:
    """A text stream that masks secrets in what is written to ``out``: whole lines are
    written at once; an incomplete line waits for its end (or ``flush``/``close``)."""

    def __init__(self, out: TextIO, masker: Masker) -> None:
        self.out = out
        self.masker = masker
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.out.write(self.masker.text(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.out.write(self.masker.text(self._pending))
            self._pending = ""
        self.out.flush()

    def close(self) -> None:
        self.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)
