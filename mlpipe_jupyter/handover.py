"""Variables that flow between steps: saved at the end of a producer step, loaded at the
start of a consumer step (Kale's "marshalling").

Both ends run inside step kernels, in cells the runner generates::

    save_variables(globals(), ["df", "model"], outputs["mlpipe_variables"], "prepare")
    globals().update(load_variables(inputs["mlpipe_variables_from_prepare"], ["df"],
                                    "prepare", "train"))

The folder is an ordinary step output (committed atomically and fingerprinted by the
runner), so this module writes plain files into it, one per variable, chosen by type:

===========================================  ===============  ==============================
value                                        file             format
===========================================  ===============  ==============================
numpy ndarray of a non-object numpy dtype    NAME.npy         ``npy``: numpy.save, no pickle
pandas DataFrame / Series / Index            NAME.pandas.pkl  ``pandas-pickle``: protocol 5
anything else                                NAME.pkl         ``cloudpickle`` (or ``pickle``)
===========================================  ===============  ==============================

and ``manifest.json`` LAST: a folder without a manifest is recognisably incomplete. The
manifest records per variable the file, format, type, size and the library versions that
matter for reading it back, so a failed load can say "written with pandas 2.2, read with
2.3". Pickles run code when loaded: load only folders of your own workspace.

Only the standard library is imported here; numpy, pandas and cloudpickle are imported when
a value needs them (a step in a container may have none of them), so every step that hands
variables pays almost nothing for this module.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FunctionType
from typing import IO, Any

from mlpipe_jupyter.errors import HandoverError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
PICKLE_PROTOCOL = 5  # out-of-band-capable buffers: large arrays are written without copies

NPY = "npy"
PANDAS_PICKLE = "pandas-pickle"
CLOUDPICKLE = "cloudpickle"
PICKLE = "pickle"  # the fallback when cloudpickle is not importable

# File names that Windows refuses whatever their extension (a workspace may be on Windows).
_WINDOWS_RESERVED = frozenset(
    ["con", "prn", "aux", "nul"] + [f"{port}{i}" for port in ("com", "lpt") for i in range(1, 10)]
)


# -- saving (end of the producer step) -----------------------------------------------------
def save_variables(namespace: Mapping[str, Any], names: Sequence[str], folder: Path | str,
                   step: str) -> None:
    """Save ``names`` from ``namespace`` (the step's ``globals()``) into ``folder``.

    Writes one file per variable, then ``manifest.json``. Every variable is tried, and one
    ``HandoverError`` reports all that could not be saved; then no manifest is written, so
    nothing claims them.
    """
    folder = Path(folder)
    names = _checked_names(names, step)
    missing = [name for name in names if name not in namespace]
    if missing:
        raise HandoverError(_undefined_message(step, missing))
    folder.mkdir(parents=True, exist_ok=True)
    # A manifest of an earlier save into this folder (an interactive re-run) must not
    # claim the variables of this one while, or if, it fails.
    (folder / MANIFEST).unlink(missing_ok=True)
    stems = _file_stems(names)
    entries: dict[str, dict[str, Any]] = {}
    failures: list[tuple[str, Exception]] = []
    for name in names:
        try:
            entries[name] = _save_one(namespace[name], folder, stems[name])
        except Exception as error:  # any failure of any value's pickling
            failures.append((name, error))
    if failures:
        messages = [_save_failure_message(step, name, namespace[name], error, folder)
                    for name, error in failures]
        if len(messages) == 1:
            raise HandoverError(messages[0]) from failures[0][1]
        raise HandoverError(
            f"step {step!r} cannot hand {len(messages)} variables to later steps:\n"
            + "\n".join(f"  - {message}" for message in messages)
        ) from failures[0][1]
    _write_manifest(folder, {"mlpipe_variables": MANIFEST_VERSION, "step": step,
                             "variables": entries})


def _checked_names(names: Sequence[str], step: str) -> list[str]:
    if isinstance(names, str):  # save_variables(g, "df", ...) would hand 'd' and 'f'
        names = [names]
    bad = [name for name in names if not (isinstance(name, str) and name.isidentifier())]
    if bad:
        raise HandoverError(f"step {step!r} cannot hand {bad[0]!r} to later steps: "
                            "it is not a Python variable name")
    return list(dict.fromkeys(names))


def _undefined_message(step: str, missing: Sequence[str]) -> str:
    quoted = ", ".join(repr(name) for name in missing)
    it = "it" if len(missing) == 1 else "them"
    return (f"step {step!r} does not define {quoted} when it ends, but later steps use "
            f"{it} (deleted with `del`, or set only in a branch that did not run?). "
            f"Define {it} on every path through step {step!r}, or in the steps that use {it}.")


def _file_stems(names: Sequence[str]) -> dict[str, str]:
    """A file name stem per variable: the name itself where that is a safe file name on
    every file system (ASCII, not a Windows device name, unique ignoring case: 'df' and
    'DF' are one file on macOS and Windows), else ``variable-N`` (not an identifier, so it
    clashes with no name). The manifest maps names to files either way."""
    folded = [name.casefold() for name in names]
    return {
        name: name if (name.isascii() and folded.count(name.casefold()) == 1
                       and name.casefold() not in _WINDOWS_RESERVED) else f"variable-{i}"
        for i, name in enumerate(names)
    }


def _save_one(value: Any, folder: Path, stem: str) -> dict[str, Any]:
    """Write ``value`` to ``folder/stem.EXT``; its manifest entry."""
    libraries = {"python": _python_version()}
    array_module = _numpy_if_plain_array(value)
    if array_module is not None:
        path = folder / f"{stem}.npy"
        with warnings.catch_warnings():
            # unicode field names need .npy format 3.0, read by numpy >= 1.17: no news
            warnings.filterwarnings("ignore", "Stored array in format 3.0", UserWarning)
            _write(path, lambda f: array_module.save(f, value, allow_pickle=False))
        form = NPY
        libraries["numpy"] = array_module.__version__
    else:
        dump, pickler = _pickler()
        if _is_pandas(value):
            path, form = folder / f"{stem}.pandas.pkl", PANDAS_PICKLE
            # pickled frames hold numpy arrays, and pyarrow arrays for pyarrow-backed dtypes
            needed: tuple[str, ...] = ("pandas", "numpy", "pyarrow")
        else:
            path, form = folder / f"{stem}.pkl", pickler
            # the value's own library (sklearn, torch, ...), and numpy, which most pickles
            # of scientific objects contain and whose pickles changed in numpy 2
            needed = (type(value).__module__.partition(".")[0], "numpy")
        libraries.update(_loaded_versions(pickler, *needed))
        _write(path, lambda f: dump(value, f, protocol=PICKLE_PROTOCOL))
    value_type = type(value)
    return {
        "file": path.name,
        "format": form,
        "type": f"{value_type.__module__}.{value_type.__qualname__}",
        "bytes": path.stat().st_size,
        "libraries": libraries,
    }


def _numpy_if_plain_array(value: Any) -> Any:
    """numpy, if ``value`` is an exact ndarray whose dtype .npy stores without pickle (not
    object, not a dtype of another package, not numpy 2's StringDType); else None.
    Subclasses (masked arrays, matrices) take the pickle path, which keeps them."""
    numpy = sys.modules.get("numpy")  # no numpy imported: the value is no array
    if numpy is None or type(value) is not numpy.ndarray:
        return None
    dtype = value.dtype
    if dtype.hasobject or type(dtype).__module__ != "numpy.dtypes":
        return None
    return numpy


def _is_pandas(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # no pandas imported: the value is no pandas object
    return pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series,
                                                     pandas.Index))


def _pickler() -> tuple[Callable[..., None], str]:
    """cloudpickle's dump (functions, lambdas and classes of the notebook are ``__main__``
    objects, which plain pickle saves by reference and another kernel cannot find), or
    pickle's when cloudpickle is not installed."""
    try:
        import cloudpickle
    except ImportError:
        return _dump_without_main, PICKLE
    return cloudpickle.dump, CLOUDPICKLE


class _NoMainPickler(pickle.Pickler):
    """Plain pickle saves a function or class by name; one defined in the notebook lives in
    ``__main__``, which a later step's kernel does not have. Refuse it now, at the step that
    can do something about it, rather than fail later in another step."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type | FunctionType) and obj.__module__ == "__main__":
            raise pickle.PicklingError(
                f"{obj.__qualname__} is defined in the notebook, and without cloudpickle it "
                "is saved by name, which a later step cannot find; install cloudpickle in "
                "the step's environment")
        return NotImplemented


def _dump_without_main(value: Any, file: IO[bytes], protocol: int) -> None:
    _NoMainPickler(file, protocol=protocol).dump(value)


def _write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Stream into ``path`` (no copy of the value in memory); remove what a failure left."""
    try:
        with open(path, "wb") as file:
            write(file)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    # write then rename: a manifest is either whole or absent, never half written
    temporary = folder / f".{MANIFEST}.partial"
    temporary.write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, folder / MANIFEST)


def _save_failure_message(step: str, name: str, value: Any, error: Exception,
                          folder: Path) -> str:
    if isinstance(error, OSError):  # the disk or the folder, not the value
        return (f"step {step!r} could not write variable {name!r} into {folder} "
                f"({type(error).__name__}: {error}). Check the free space and permissions "
                "of the step's output folder.")
    return (f"step {step!r} cannot hand variable {name!r} to later steps: {_describe(value)} "
            f"cannot be saved ({type(error).__name__}: {error}). Recreate it in the step that "
            "uses it, or write what it holds to an --output folder.")


def _describe(value: Any) -> str:
    """'a socket', 'a generator', 'an open file': what the user would call the value."""
    if isinstance(value, io.IOBase):
        return "an open file"
    kind = type(value).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"


# -- loading (start of the consumer step) --------------------------------------------------
def load_variables(folder: Path | str, names: Sequence[str], producer: str,
                   step: str) -> dict[str, Any]:
    """The variables ``names`` that step ``producer`` saved into ``folder``, by name, for
    step ``step`` (``globals().update(...)`` puts them in the step's namespace)."""
    folder = Path(folder)
    manifest = _read_manifest(folder, producer, step)
    if isinstance(names, str):
        names = [names]
    return {name: _load_one(folder, manifest, name, producer, step) for name in names}


def load_variable(folder: Path | str, name: str) -> Any:
    """One saved variable of a committed result (``%mlpipe load``, a notebook of yours)."""
    folder = Path(folder)
    manifest = _read_manifest(folder, None, None)
    return _load_one(folder, manifest, name, manifest.get("step"), None)


def describe(folder: Path | str) -> dict[str, Any]:
    """The manifest of a folder of saved variables: ``{"step": ..., "variables": {name:
    {"file", "format", "type", "bytes", "libraries"}}}``, for displays."""
    return _read_manifest(Path(folder), None, None)


def _read_manifest(folder: Path, producer: str | None, step: str | None) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HandoverError(
            f"{_reader(step)} cannot load the saved variables of {_producer(producer)}: "
            f"they are incomplete ({folder} has no {MANIFEST}; the saving step did not "
            f"finish). {_rerun_hint(producer)}"
        ) from None
    except (OSError, ValueError) as error:
        raise HandoverError(
            f"{_reader(step)} cannot load the saved variables of {_producer(producer)}: "
            f"{folder / MANIFEST} cannot be read ({type(error).__name__}: {error}). "
            f"{_rerun_hint(producer)}"
        ) from error
    if not isinstance(manifest, dict) or manifest.get("mlpipe_variables") != MANIFEST_VERSION:
        raise HandoverError(
            f"{_reader(step)} cannot load the saved variables of {_producer(producer)}: "
            f"{folder / MANIFEST} is not a manifest of version {MANIFEST_VERSION} of "
            f"mlpipe's saved variables. {_rerun_hint(producer)}"
        )
    return manifest


def _load_one(folder: Path, manifest: Mapping[str, Any], name: str, producer: str | None,
              step: str | None) -> Any:
    entry = manifest.get("variables", {}).get(name)
    start = (f"{_reader(step)} cannot load variable {name!r} saved by "
             f"{_producer(producer)}")
    if entry is None:
        saved = ", ".join(repr(known) for known in manifest.get("variables", {})) or "none"
        raise HandoverError(
            f"{start}: the saved variables of {_producer(producer)} are incomplete: "
            f"{name!r} is not among them (saved: {saved}). {_rerun_hint(producer)}"
        )
    path = folder / entry["file"]
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise HandoverError(
            f"{start}: the saved variables of {_producer(producer)} are incomplete: "
            f"{path} is missing. {_rerun_hint(producer)}"
        ) from None
    if size != entry["bytes"]:
        raise HandoverError(
            f"{start}: {path} was changed or cut short after it was saved ({size} bytes, "
            f"{entry['bytes']} were written). {_rerun_hint(producer)}"
        )
    try:
        with open(path, "rb") as file:
            if entry["format"] == NPY:
                import numpy

                return numpy.load(file, allow_pickle=False)
            return pickle.load(file)
    except ModuleNotFoundError as error:
        written = entry.get("libraries", {}).get(error.name or "")
        had = f" (step {producer!r} had {error.name} {written})" if written and producer else ""
        raise HandoverError(
            f"{start}: reading it needs the module {error.name!r}, which cannot be imported "
            f"here{had}. Install it in the environment of {_reader(step)}."
        ) from error
    except Exception as error:  # whatever unpickling raises
        raise HandoverError(
            f"{start}: {type(error).__name__}: {error}. "
            f"{_versions_hint(entry.get('libraries', {}), producer)}"
        ) from error


def _versions_hint(written: Mapping[str, str], producer: str | None) -> str:
    """Which library versions differ between the writing and this reading kernel: the
    usual cause of an unpickling error (pandas 2.2 vs 2.3); else, a damaged file."""
    now = {library: _version(library) for library in written}
    differ = [f"{library} {version} vs {now[library] or 'not installed'}"
              for library, version in written.items() if now[library] != version]
    if not differ:
        return ("It was written and is read with the same library versions, so the file "
                f"may be damaged. {_rerun_hint(producer)}")
    return (f"It was written and is read with different library versions (written vs. "
            f"read: {', '.join(differ)}): use the same versions in both steps' "
            f"environments, or {_rerun_hint(producer, sentence=False)}")


def _rerun_hint(producer: str | None, sentence: bool = True) -> str:
    hint = (f"run step {producer!r} again: mlpipe run NOTEBOOK --step {producer} --downstream."
            if producer else "run the step that saved them again.")
    return hint[0].upper() + hint[1:] if sentence else hint


def _reader(step: str | None) -> str:
    return f"step {step!r}" if step else "this kernel"


def _producer(producer: str | None) -> str:
    return f"step {producer!r}" if producer else "a step"


# -- versions ------------------------------------------------------------------------------
def _python_version() -> str:
    return "{}.{}.{}".format(*sys.version_info[:3])


def _version(library: str) -> str | None:
    """The version of ``library`` in this kernel (importing it), None if not installed."""
    if library == "python":
        return _python_version()
    if library == PICKLE:
        return None  # part of python
    try:
        module = __import__(library)
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) else None


def _loaded_versions(*libraries: str) -> dict[str, str]:
    """The versions of those of ``libraries`` this kernel has imported (importing nothing)."""
    versions = {}
    for library in libraries:
        version = getattr(sys.modules.get(library), "__version__", None)
        if isinstance(version, str) and library not in ("builtins", "__main__"):
            versions[library] = version
    return versions


__all__ = [
    "CLOUDPICKLE",
    "MANIFEST",
    "NPY",
    "PANDAS_PICKLE",
    "PICKLE",
    "HandoverError",
    "describe",
    "load_variable",
    "load_variables",
    "save_variables",
]
