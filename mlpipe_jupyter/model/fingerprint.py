"""Step fingerprints: what a result depends on, and how to say what changed (pure).

A step's fingerprint is the hash of its components. Each component is kept by name, so
that ``mlpipe why`` can compare a step with its previous result component by component.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlpipe_jupyter.model.step import VARIABLES_INPUT_PREFIX, VARIABLES_OUTPUT

# Bump when the meaning of a component changes, so old results are not reused wrongly.
# 2: parameter values as canonical Python literals (JSON made (1, 2) and [1, 2] one value).
FINGERPRINT_SCHEME = 2


def hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


@dataclass(frozen=True)
class FingerprintComponents:
    """Everything that can change a step's result, already reduced to comparable values."""

    code: str  # hash of the step cell's body
    setup: str  # hash of the setup cells, in order
    files: Mapping[str, str] = field(default_factory=dict)  # path -> content hash
    params: Mapping[str, str] = field(default_factory=dict)  # name -> canonical literal
    inputs: Mapping[str, str] = field(default_factory=dict)  # input name -> source identity
    environment: str = ""  # environment fingerprint (packages / image)
    settings: Mapping[str, Any] = field(default_factory=dict)  # kernel, outputs, ...
    scheme: int = FINGERPRINT_SCHEME  # how the components were computed (records keep theirs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FingerprintComponents:
        return cls(**{**data, "scheme": data.get("scheme", 1)})

    def fingerprint(self) -> str:
        return hash_text(canonical_json(self.to_dict()))[:32]


def _describe_mapping_change(
    label: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            changes.append(f"{label} {key!r} added ({_short(new[key])})")
        elif key not in new:
            changes.append(f"{label} {key!r} removed (was {_short(old[key])})")
        elif old[key] != new[key]:
            changes.append(f"{label} {key!r} changed: {_short(old[key])} -> {_short(new[key])}")
    return changes


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    # content hashes are long and unreadable; keep the readable prefix of identities
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def _folders(inputs: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in inputs.items() if not k.startswith(VARIABLES_INPUT_PREFIX)}


def _describe_variable_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """The inputs that carry handed-over variables, named by the step that saved them."""
    changes = []
    for key in sorted(set(old) | set(new)):
        if not key.startswith(VARIABLES_INPUT_PREFIX):
            continue
        producer = key[len(VARIABLES_INPUT_PREFIX):]
        if key not in old:
            changes.append(f"it now receives variables from step {producer!r}")
        elif key not in new:
            changes.append(f"it no longer receives variables from step {producer!r}")
        elif old[key] != new[key]:
            changes.append(f"the variables it receives from step {producer!r} changed "
                           f"(a new result of {producer!r})")
    return changes


def describe_changes(old: FingerprintComponents, new: FingerprintComponents) -> list[str]:
    """Human sentences naming each component that differs between two fingerprints."""
    if old.scheme != new.scheme:  # the components mean different things: nothing to compare
        return [f"mlpipe computes fingerprints differently since it was upgraded (scheme "
                f"{old.scheme} -> {new.scheme}), so each step runs once again"]
    changes: list[str] = []
    if old.code != new.code:
        changes.append("the step's code changed")
    if old.setup != new.setup:
        changes.append("the %%mlsetup cells changed")
    changes += _describe_mapping_change("file", old.files, new.files)
    changes += _describe_mapping_change("parameter", old.params, new.params)
    changes += _describe_variable_changes(old.inputs, new.inputs)
    changes += _describe_mapping_change("input", _folders(old.inputs), _folders(new.inputs))
    if old.environment != new.environment:
        changes.append(
            f"the environment changed: {_short(old.environment)} -> {_short(new.environment)}"
        )
    changes += _describe_mapping_change("setting", _shown_settings(old.settings),
                                        _shown_settings(new.settings))
    return changes


# The components a user can tell apart, in the order ``changed_components`` reports them.
COMPONENTS = ("code", "setup", "files", "params", "inputs", "environment", "settings")


def changed_components(old: FingerprintComponents, new: FingerprintComponents) -> list[str]:
    """The names (``COMPONENTS``) of the components that differ: which of code,
    parameters, inputs, environment ... made two fingerprints differ."""
    if old.scheme != new.scheme:
        return ["scheme"]
    changed = [name for name in COMPONENTS if name != "settings"
               and getattr(old, name) != getattr(new, name)]
    if _shown_settings(old.settings) != _shown_settings(new.settings) or \
            old.settings.get("variables") != new.settings.get("variables"):
        changed.append("settings")
    return changed


def _shown_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as a user declared them: the folder of handed-over variables is not one
    of the step's outputs to them (the ``variables`` setting says what changed there)."""
    outputs = settings.get("outputs")
    if not isinstance(outputs, list) or VARIABLES_OUTPUT not in outputs:
        return dict(settings)
    return {**settings, "outputs": [name for name in outputs if name != VARIABLES_OUTPUT]}
