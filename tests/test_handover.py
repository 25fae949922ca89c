"""Variables handed between steps: real round trips through files, as a later step sees them.

Every test saves with ``save_variables`` into a folder and loads with ``load_variables`` (or
``load_variable``) from it, then checks what a user would: the same values, dtypes, index,
attrs, predictions; and, when something cannot be handed over, an error naming the step and
the variable and no manifest claiming it.
"""

from __future__ import annotations

import decimal
import fractions
import json
import math
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.extra import pandas as hpd

from mlpipe_jupyter.errors import HandoverError, MlpipeError
from mlpipe_jupyter.handover import (
    CLOUDPICKLE,
    MANIFEST,
    NPY,
    PANDAS_PICKLE,
    PICKLE,
    describe,
    load_variable,
    load_variables,
    save_variables,
)

REPO = Path(__file__).resolve().parent.parent

# Property tests: modest example counts (the file runs in seconds); no example database
# written into the checkout; a fresh folder per example, below pytest's own temporary one.
FAST = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[Path]:
    """Endless fresh folders (hypothesis calls a test many times with one tmp_path)."""
    def fresh() -> Iterator[Path]:
        for i in range(10**9):
            yield tmp_path / f"vars-{i}"
    return fresh()


def round_trip(value: Any, folder: Path, name: str = "x") -> Any:
    """``value`` saved by step 'prepare' and loaded by step 'train'."""
    save_variables({name: value}, [name], folder, "prepare")
    loaded = load_variables(folder, [name], "prepare", "train")
    assert list(loaded) == [name]
    return loaded[name]


def format_of(folder: Path, name: str = "x") -> str:
    return describe(folder)["variables"][name]["format"]


# -- pandas --------------------------------------------------------------------------------
TIME_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
NANOS = st.integers(min_value=-(2**62), max_value=2**62)  # inside datetime64[ns]' range


def odd_column(n: int) -> st.SearchStrategy[pd.Series | pd.Index]:
    """One column of ``n`` values, of a dtype that a CSV or parquet round trip may change."""
    def values(element: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
        return st.lists(element, min_size=n, max_size=n)

    words = st.text(min_size=0, max_size=6)
    maybe = st.none().map(lambda _: pd.NA)
    return st.one_of(
        # categorical, ordered or not, with missing values and unused categories
        st.tuples(values(st.sampled_from(["a", "b", "ç", None])), st.booleans()).map(
            lambda v: pd.Series(pd.Categorical(v[0], categories=["a", "b", "ç", "unused"],
                                               ordered=v[1]))),
        # tz-aware datetimes (with NaT), and naive ones in units other than ns
        st.tuples(values(NANOS | st.none()), st.sampled_from(TIME_ZONES)).map(
            lambda v: pd.Series(pd.to_datetime(v[0], unit="ns")).dt.tz_localize("UTC")
            .dt.tz_convert(v[1])),
        values(st.datetimes(min_value=datetime(1700, 1, 1))).map(
            lambda v: pd.Series(np.array(v, dtype="datetime64[us]"))),
        values(st.timedeltas(min_value=-timedelta(days=10**5), max_value=timedelta(days=10**5))
               | st.none()).map(lambda v: pd.Series(pd.to_timedelta(v))),
        # the nullable extension dtypes
        values(st.integers(-(2**63), 2**63 - 1) | maybe).map(lambda v: pd.Series(v, dtype="Int64")),
        values(st.integers(0, 255) | maybe).map(lambda v: pd.Series(v, dtype="UInt8")),
        values(st.booleans() | maybe).map(lambda v: pd.Series(v, dtype="boolean")),
        values(st.floats(allow_nan=False) | maybe).map(lambda v: pd.Series(v, dtype="Float64")),
        values(words | maybe).map(lambda v: pd.Series(v, dtype="string[python]")),
        values(words | maybe).map(lambda v: pd.Series(v, dtype="string[pyarrow]")),
        values(words | st.none()).map(lambda v: pd.Series(v, dtype="str")),  # pandas 3's default
        # floats with nan and inf, and objects of mixed types
        values(st.floats(allow_nan=True, allow_infinity=True)).map(
            lambda v: pd.Series(v, dtype="float64")),
        values(st.one_of(st.integers(), words, st.none(), st.tuples(st.integers()))).map(
            lambda v: pd.Series(v, dtype=object)),
        # periods, intervals and sparse data
        values(st.integers(-(10**5), 10**5)).map(
            lambda v: pd.Series(pd.PeriodIndex.from_ordinals(v, freq="D"))),
        values(st.integers(-100, 100)).map(
            lambda v: pd.Series(pd.arrays.IntervalArray.from_arrays(v, [x + 1 for x in v],
                                                                    closed="left"))),
        values(st.sampled_from([0.0, 0.0, 1.5, float("nan")])).map(
            lambda v: pd.Series(pd.arrays.SparseArray(v))),
    )


def odd_index(n: int) -> st.SearchStrategy[pd.Index]:
    return st.one_of(
        st.just(pd.RangeIndex(n)),
        st.just(pd.RangeIndex(start=10, stop=10 + 3 * n, step=3)),
        # duplicate labels
        st.lists(st.sampled_from(["x", "y", "ü"]), min_size=n, max_size=n).map(
            lambda v: pd.Index(v, dtype=object, name="label")),
        # a MultiIndex with named levels of different types
        st.tuples(st.lists(st.integers(0, 3), min_size=n, max_size=n),
                  st.lists(st.text(max_size=3), min_size=n, max_size=n)).map(
            lambda v: pd.MultiIndex.from_arrays(list(v), names=["id", "kind"])),
        st.sampled_from(TIME_ZONES).map(
            lambda tz: pd.date_range("2024-03-30", periods=n, freq="h", tz=tz, name="t")),
        st.lists(st.sampled_from(["lo", "hi"]), min_size=n, max_size=n).map(pd.CategoricalIndex),
    )


column_labels = st.one_of(
    st.text(max_size=8),  # any unicode, including "" and emoji
    st.integers(-5, 5),
    st.tuples(st.integers(0, 2), st.text(max_size=2)),
    st.sampled_from(["a", "a", "b"]),  # duplicates are likely
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3),
                                                                     children, max_size=3),
    max_leaves=6,
)


@st.composite
def odd_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(0, 6))
    width = draw(st.integers(0, 5))
    columns = [draw(odd_column(n)).reset_index(drop=True) for _ in range(width)]
    frame = pd.concat(columns, axis=1) if columns else pd.DataFrame(index=range(n))
    frame.columns = pd.Index([draw(column_labels) for _ in range(width)], dtype=object)
    frame.index = draw(odd_index(n))
    frame.attrs = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
    return frame


def assert_same_frame(back: pd.DataFrame, frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(back, frame, check_exact=True, check_dtype=True,
                                  check_index_type=True, check_column_type=True,
                                  check_categorical=True, check_freq=True, check_flags=True)
    assert list(back.dtypes) == list(frame.dtypes)
    assert type(back.index) is type(frame.index)
    assert type(back.columns) is type(frame.columns)
    assert list(back.columns) == list(frame.columns)  # ints stay ints, tuples stay tuples
    assert back.attrs == frame.attrs


@FAST
@given(frame=odd_frames())
def test_a_dataframe_of_odd_dtypes_comes_back_exactly(frame: pd.DataFrame,
                                                      folders: Iterator[Path]) -> None:
    folder = next(folders)
    back = round_trip(frame, folder, "df")
    assert_same_frame(back, frame)
    assert format_of(folder, "df") == PANDAS_PICKLE


@settings(FAST, max_examples=25)  # hypothesis draws these frames slowly
@given(frame=hpd.data_frames(
    columns=[
        hpd.column("int", dtype=np.int64),
        hpd.column("float", dtype=float),
        hpd.column("bool", dtype=bool),
        hpd.column("when", dtype="datetime64[ns]"),
        hpd.column("ünï 🎉", elements=st.text(max_size=4), dtype=object),
        hpd.column(7, dtype=np.uint16),
    ],
    index=hpd.indexes(elements=st.integers(-5, 5), max_size=8)  # duplicates allowed
    | hpd.range_indexes(max_size=8),
))
def test_hypothesis_dataframes_come_back_exactly(frame: pd.DataFrame,
                                                 folders: Iterator[Path]) -> None:
    assert_same_frame(round_trip(frame, next(folders)), frame)


@FAST
@given(series=hpd.series(dtype=float, index=hpd.indexes(dtype="datetime64[ns]", max_size=6))
       | st.integers(0, 6).flatmap(odd_column),
       name=st.none() | st.text(max_size=3) | st.integers())
def test_a_series_comes_back_exactly(series: pd.Series, name: Any,
                                     folders: Iterator[Path]) -> None:
    series = series.rename(name)
    series.attrs = {"unit": "cm"}
    folder = next(folders)
    back = round_trip(series, folder)
    pd.testing.assert_series_equal(back, series, check_exact=True, check_index_type=True,
                                   check_categorical=True, check_freq=True)
    assert back.dtype == series.dtype and back.name == series.name
    assert back.attrs == {"unit": "cm"}
    assert format_of(folder) == PANDAS_PICKLE


@FAST
@given(index=st.integers(0, 6).flatmap(odd_index)
       | hpd.indexes(elements=st.floats(allow_nan=True), max_size=5))
def test_an_index_comes_back_exactly(index: pd.Index, folders: Iterator[Path]) -> None:
    back = round_trip(index, next(folders))
    pd.testing.assert_index_equal(back, index, exact=True, check_exact=True,
                                  check_categorical=True)
    assert type(back) is type(index) and back.names == index.names


def test_a_frame_keeps_its_flags_and_a_notebook_object_in_a_column(tmp_path: Path) -> None:
    class Point:  # a local class: plain pickle could not save it, cloudpickle can
        def __init__(self, x: int) -> None:
            self.x = x

    frame = pd.DataFrame({"p": [Point(1), Point(2)]}).set_flags(allows_duplicate_labels=False)
    back = round_trip(frame, tmp_path / "v")
    assert [p.x for p in back["p"]] == [1, 2]
    assert back.flags.allows_duplicate_labels is False


# -- numpy ---------------------------------------------------------------------------------
any_dtype = (hnp.scalar_dtypes() | hnp.integer_dtypes(endianness="?")
             | hnp.floating_dtypes(endianness="?") | hnp.complex_number_dtypes(endianness="?")
             | hnp.byte_string_dtypes() | hnp.unicode_string_dtypes()
             | hnp.datetime64_dtypes(endianness="?") | hnp.timedelta64_dtypes(endianness="?")
             | hnp.nested_dtypes(max_itemsize=64))


@FAST
@given(array=hnp.arrays(any_dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0,
                                                     max_side=4)),
       fortran=st.booleans())
def test_a_numpy_array_comes_back_bit_for_bit(array: np.ndarray, fortran: bool,
                                              folders: Iterator[Path]) -> None:
    array = np.asfortranarray(array) if fortran and array.ndim else array
    folder = next(folders)
    back = round_trip(array, folder)
    assert type(back) is np.ndarray
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # NaN payloads, NaT and -0.0 included
    assert format_of(folder) == NPY
    assert describe(folder)["variables"]["x"]["file"] == "x.npy"


@pytest.mark.parametrize("array", [
    np.array(3.5),  # 0-d
    np.empty((0, 3), dtype=np.int32),
    np.array([(1, b"ab", [0.5, 1.5])], dtype=[("id", "<i4"), ("tag", "S2"), ("v", ">f8", 2)]),
    np.array(["2024-03-31T02:30", "NaT"], dtype="datetime64[m]"),
    np.array(["naïve", "日本語", ""]),
    np.arange(12, dtype=np.float16).reshape(3, 4)[:, ::2],  # not contiguous
], ids=["0-d", "empty", "structured", "datetime64", "unicode", "strided"])
def test_numpy_arrays_of_many_kinds_come_back(array: np.ndarray, tmp_path: Path) -> None:
    back = round_trip(array, tmp_path / "v")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert format_of(tmp_path / "v") == NPY


@pytest.mark.parametrize("array", [
    np.array([1, "a", None, (2, 3)], dtype=object),
    np.array([("a", [1, 2])], dtype=[("name", "U1"), ("items", object)]),
    np.array(["x", "yy"], dtype=np.dtypes.StringDType()),  # numpy 2's variable-width strings
    np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),  # a subclass: .npy would drop the mask
], ids=["object", "structured-with-object", "StringDType", "masked"])
def test_arrays_npy_cannot_hold_take_the_pickle_path(array: np.ndarray, tmp_path: Path) -> None:
    back = round_trip(array, tmp_path / "v")
    assert type(back) is type(array) and back.dtype == array.dtype
    assert back.tolist() == array.tolist()
    if isinstance(array, np.ma.MaskedArray):
        assert back.mask.tolist() == [False, True, False]
    assert format_of(tmp_path / "v") == CLOUDPICKLE


# -- models, functions, classes ------------------------------------------------------------
def test_a_fitted_model_predicts_the_same_after_the_hand_over(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    features = np.random.default_rng(0).normal(size=(90, 4))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int) + (features[:, 2] > 1)
    model = LogisticRegression().fit(features, labels)
    back = round_trip(model, tmp_path / "v", "model")
    assert type(back) is LogisticRegression
    assert (back.predict(features) == model.predict(features)).all()
    assert np.array_equal(back.predict_proba(features), model.predict_proba(features))
    libraries = describe(tmp_path / "v")["variables"]["model"]["libraries"]
    import sklearn

    assert libraries["sklearn"] == sklearn.__version__
    assert libraries["numpy"] == np.__version__


def run_producer(code: str, folder: Path, *pythonpath: Path) -> None:
    """Run ``code`` as a script (its own ``__main__``, as a step kernel has) that ends
    with ``save_variables(globals(), ...)``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [REPO, *pythonpath]))}
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        from mlpipe_jupyter.handover import save_variables
        save_variables(globals(), NAMES, {str(folder)!r}, "prepare")
    """)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=folder.parent,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_functions_lambdas_and_classes_of_the_notebook_reach_another_kernel(
        tmp_path: Path) -> None:
    folder = tmp_path / "v"
    run_producer("""
        import math
        SCALE = 3

        def scaled(x):
            return SCALE * x

        square = lambda x: x * x

        class Point:
            def __init__(self, x, y):
                self.x, self.y = x, y

            def norm(self):
                return math.hypot(self.x, self.y)

        origin_distance = Point(3, 4)
        NAMES = ["scaled", "square", "Point", "origin_distance"]
    """, folder)
    # this process's __main__ is pytest's: no scaled, square or Point in it
    assert not hasattr(sys.modules["__main__"], "Point")
    got = load_variables(folder, ["scaled", "square", "Point", "origin_distance"],
                         "prepare", "train")
    assert got["scaled"](14) == 42
    assert got["square"](9) == 81
    assert got["Point"](6, 8).norm() == 10.0
    assert got["origin_distance"].norm() == 5.0
    assert type(got["origin_distance"]).__name__ == "Point"
    manifest = describe(folder)
    assert manifest["step"] == "prepare"
    assert {entry["format"] for entry in manifest["variables"].values()} == {CLOUDPICKLE}
    assert manifest["variables"]["origin_distance"]["type"] == "__main__.Point"


# -- plain Python values -------------------------------------------------------------------
def shape_of(value: Any) -> Any:
    """The value's types, all the way down (1 == 1.0 == True, but the types differ)."""
    if isinstance(value, dict):
        return (dict, [(shape_of(k), shape_of(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value), [shape_of(item) for item in value])
    if isinstance(value, set | frozenset):
        return (type(value), sorted(map(repr, map(shape_of, value))))
    return type(value)


PY_VALUES = {
    "true": True,
    "none": None,
    "unicode": "naïve 日本語 🎉 \x00 \u200b",
    "nested": {"a": {"b": [1, (2.0, "3")], 4: {None: (True,)}}, (1, 2): frozenset({1})},
    "tuple": (1, "x", (2, (3,))),
    "set": {1, "two", (3, 4)},
    "bytes": b"\x00\xff\x80",
    "bytearray": bytearray(b"ab"),
    "inf": float("-inf"),
    "big": 2**200 + 1,
    "negative_big": -(2**70),
    "complex": complex(1, -2),
    "decimal": decimal.Decimal("1.10"),
    "fraction": fractions.Fraction(1, 3),
    "datetime": datetime(2024, 3, 31, 2, 30, tzinfo=UTC),
    "range": range(2, 20, 3),
    "empty": [],
}


def test_python_values_come_back_with_their_types(tmp_path: Path) -> None:
    values = {**PY_VALUES, "nan": float("nan")}
    save_variables(values, list(values), tmp_path / "v", "prepare")
    back = load_variables(tmp_path / "v", list(values), "prepare", "train")
    assert math.isnan(back.pop("nan"))
    assert back == PY_VALUES
    assert {name: shape_of(value) for name, value in back.items()} == {
        name: shape_of(value) for name, value in PY_VALUES.items()}


def test_a_cyclic_structure_comes_back_cyclic(tmp_path: Path) -> None:
    cycle: list[Any] = [1]
    cycle.append(cycle)
    back = round_trip(cycle, tmp_path / "v")
    assert back[0] == 1 and back[1] is back


def test_the_manifest_describes_every_file(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    namespace = {"df": pd.DataFrame({"a": [1, 2]}), "arr": np.zeros(3), "cfg": {"lr": 0.1},
                 "DF": 1, "données": 2, "con": 3, "unused": 4}
    save_variables(namespace, ["df", "arr", "cfg", "DF", "données", "con"], folder, "prepare")
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    assert manifest == describe(folder)
    entries = manifest["variables"]
    assert list(entries) == ["df", "arr", "cfg", "DF", "données", "con"]
    # 'df' and 'DF' would be one file on macOS and Windows; 'con' is a Windows device name
    assert {name: entry["file"] for name, entry in entries.items()} == {
        "df": "variable-0.pandas.pkl", "arr": "arr.npy", "cfg": "cfg.pkl",
        "DF": "variable-3.pkl", "données": "variable-4.pkl", "con": "variable-5.pkl"}
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        [MANIFEST] + [entry["file"] for entry in entries.values()])
    assert entries["df"]["type"] == "pandas.DataFrame" or entries["df"]["type"].endswith(
        ".DataFrame")
    assert entries["arr"]["type"] == "numpy.ndarray"
    assert entries["cfg"]["type"] == "builtins.dict"
    for entry in entries.values():
        assert entry["bytes"] == (folder / entry["file"]).stat().st_size
        assert entry["libraries"]["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert entries["df"]["libraries"]["pandas"] == pd.__version__
    assert entries["df"]["libraries"]["numpy"] == np.__version__
    assert entries["arr"]["libraries"] == {"python": entries["arr"]["libraries"]["python"],
                                           "numpy": np.__version__}
    import cloudpickle

    assert entries["cfg"]["libraries"]["cloudpickle"] == cloudpickle.__version__
    assert load_variable(folder, "données") == 2
    assert load_variables(folder, ["DF", "df"], "prepare", "train")["DF"] == 1


def test_without_cloudpickle_plain_pickle_saves_data_and_refuses_notebook_functions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # `import cloudpickle` fails
    folder = tmp_path / "v"
    assert round_trip({"a": (1, 2)}, folder) == {"a": (1, 2)}
    assert format_of(folder) == PICKLE
    assert "cloudpickle" not in describe(folder)["variables"]["x"]["libraries"]

    def helper() -> int:
        return 1

    helper.__module__ = "__main__"  # as if defined in the notebook
    helper.__qualname__ = "helper"
    with pytest.raises(HandoverError) as raised:
        save_variables({"helper": helper}, ["helper"], tmp_path / "w", "prepare")
    message = str(raised.value)
    assert "step 'prepare' cannot hand variable 'helper'" in message
    assert "install cloudpickle" in message
    assert not (tmp_path / "w" / MANIFEST).exists()


# -- errors --------------------------------------------------------------------------------
def unpicklable() -> dict[str, tuple[Any, str]]:
    def numbers() -> Iterator[int]:
        yield 1

    return {
        "socket": (socket.socket(), "a socket cannot be saved (TypeError: cannot pickle"),
        "generator": (numbers(), "a generator cannot be saved (TypeError: cannot pickle"),
        "lock": (threading.Lock(), "a lock cannot be saved (TypeError: cannot pickle"),
    }


@pytest.mark.parametrize("kind", ["socket", "generator", "lock", "file"])
def test_a_value_that_cannot_be_pickled_fails_the_producer_and_claims_nothing(
        kind: str, tmp_path: Path) -> None:
    folder = tmp_path / "v"
    if kind == "file":
        value: Any = open(tmp_path / "notes.txt", "w")  # closed below
        expected = "an open file cannot be saved (PicklingError: Cannot pickle files"
    else:
        value, expected = unpicklable()[kind]
    try:
        # an earlier, successful save into the same folder (an interactive re-run)
        save_variables({"conn": 1}, ["conn"], folder, "prepare")
        with pytest.raises(HandoverError) as raised:
            save_variables({"df": [1, 2], "conn": value}, ["df", "conn"], folder, "prepare")
    finally:
        if hasattr(value, "close"):
            value.close()
    message = str(raised.value)
    assert message.startswith("step 'prepare' cannot hand variable 'conn' to later steps: ")
    assert expected in message
    assert "Recreate it in the step that uses it, or write what it holds to an --output " \
           "folder." in message
    assert isinstance(raised.value, MlpipeError)
    assert isinstance(raised.value.__cause__, TypeError | pickle.PicklingError)
    # no manifest claims 'conn' (the earlier one is gone too), no half-written file is left
    assert not (folder / MANIFEST).exists()
    assert sorted(path.name for path in folder.iterdir()) == ["df.pkl"]
    with pytest.raises(HandoverError, match="incomplete"):
        load_variables(folder, ["df"], "prepare", "train")


def test_every_variable_that_cannot_be_saved_is_reported_at_once(tmp_path: Path) -> None:
    values = {name: value for name, (value, _) in unpicklable().items()}
    try:
        with pytest.raises(HandoverError) as raised:
            save_variables(values, list(values), tmp_path / "v", "prepare")
    finally:
        values["socket"].close()
    message = str(raised.value)
    assert message.startswith("step 'prepare' cannot hand 3 variables to later steps:")
    for name in values:
        assert f"variable {name!r}" in message


def test_a_name_the_step_does_not_define_is_reported_before_anything_is_written(
        tmp_path: Path) -> None:
    with pytest.raises(HandoverError) as raised:
        save_variables({"model": 1}, ["df", "model", "scaler"], tmp_path / "v", "prepare")
    message = str(raised.value)
    assert message.startswith(
        "step 'prepare' does not define 'df', 'scaler' when it ends, but later steps use them")
    assert not (tmp_path / "v").exists()


def test_a_name_that_is_no_variable_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HandoverError, match="'a-b' to later steps: it is not a Python variable"):
        save_variables({"a-b": 1}, ["a-b"], tmp_path / "v", "prepare")


def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "v"
    save_variables({"df": pd.DataFrame({"a": [1.5]}), "arr": np.arange(4), "cfg": {"k": 1}},
                   ["df", "arr", "cfg"], folder, "prepare")
    return folder


def test_a_missing_manifest_says_the_variables_are_incomplete(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / MANIFEST).unlink()
    with pytest.raises(HandoverError) as raised:
        load_variables(folder, ["df"], "prepare", "train")
    message = str(raised.value)
    assert message.startswith("step 'train' cannot load the saved variables of step "
                              "'prepare': they are incomplete")
    assert "mlpipe run NOTEBOOK --step prepare --downstream" in message
    with pytest.raises(HandoverError, match="incomplete"):
        describe(folder)


def test_a_missing_file_or_variable_says_the_variables_are_incomplete(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    (folder / "arr.npy").unlink()
    with pytest.raises(HandoverError, match=r"^step 'train' cannot load variable 'arr' saved by "
                                            r"step 'prepare': the saved variables of step "
                                            r"'prepare' are incomplete: .*arr.npy is missing"):
        load_variables(folder, ["df", "arr"], "prepare", "train")
    with pytest.raises(HandoverError, match=r"'model' is not among them \(saved: 'df', 'arr', "
                                            r"'cfg'\)"):
        load_variables(folder, ["model"], "prepare", "train")


@pytest.mark.parametrize("file", ["df.pandas.pkl", "arr.npy", "cfg.pkl"])
def test_a_corrupted_file_names_the_producer_the_variable_and_the_consumer(
        file: str, tmp_path: Path) -> None:
    folder = saved(tmp_path)
    path = folder / file
    path.write_bytes(b"\x13" * path.stat().st_size)  # same size: only unpickling can tell
    name = file.partition(".")[0]
    with pytest.raises(HandoverError) as raised:
        load_variables(folder, [name], "prepare", "train")
    message = str(raised.value)
    assert message.startswith(f"step 'train' cannot load variable {name!r} saved by step "
                              "'prepare': ")
    assert "same library versions, so the file may be damaged" in message
    assert raised.value.__cause__ is not None


def test_a_truncated_file_is_noticed_before_unpickling(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    path = folder / "df.pandas.pkl"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(HandoverError, match="was changed or cut short after it was saved"):
        load_variable(folder, "df")


def test_an_unpickling_error_names_the_versions_written_and_reading(tmp_path: Path) -> None:
    folder = saved(tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    manifest["variables"]["df"]["libraries"]["pandas"] = "2.2.3"
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    path = folder / "df.pandas.pkl"
    path.write_bytes(b"\x80\x05garbage".ljust(path.stat().st_size, b"."))
    with pytest.raises(HandoverError) as raised:
        load_variables(folder, ["df"], "prepare", "train")
    message = str(raised.value)
    assert f"(written vs. read: pandas 2.2.3 vs {pd.__version__})" in message
    assert "use the same versions in both steps' environments, or run step 'prepare' again" \
        in message


def test_a_module_the_consumer_lacks_is_named(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    (library / "mlpipe_probe_shapes.py").write_text(
        "__version__ = '0.3'\n\nclass Circle:\n    def __init__(self, r):\n        self.r = r\n")
    folder = tmp_path / "v"
    run_producer("""
        from mlpipe_probe_shapes import Circle
        shape = Circle(2)
        NAMES = ["shape"]
    """, folder, library)
    assert describe(folder)["variables"]["shape"]["libraries"]["mlpipe_probe_shapes"] == "0.3"
    with pytest.raises(HandoverError) as raised:
        load_variables(folder, ["shape"], "prepare", "train")
    assert str(raised.value) == (
        "step 'train' cannot load variable 'shape' saved by step 'prepare': reading it needs "
        "the module 'mlpipe_probe_shapes', which cannot be imported here (step 'prepare' had "
        "mlpipe_probe_shapes 0.3). Install it in the environment of step 'train'.")
