"""A Kale-format notebook that hands variables along every kind of edge (our own notebook).

- a chain: ``raw`` is built by ``load``, changed by ``clean``, split by ``split``;
- a fan-out: five ``ridge_N`` steps each read the same two DataFrames (``train``, ``test``)
  and a class and a function of the ``functions`` cell;
- a join: ``pick`` reads the five errors;
- pipeline parameters of every literal type, and pipeline metrics.

Only numpy and pandas: the same notebook runs locally, in a container and on Dask workers.
"""

from __future__ import annotations

from pathlib import Path

from tests.kale.helpers import kale_notebook

MODELS = 5
ALPHAS = [0.01, 0.1, 1.0, 10.0, 100.0]

PARAMETERS = """\
seed = 7
rows = 240
test_share = 0.25
noisy = True
label = None
title = "zoo ☕ café"
shape = (2, 3)
grid = {"alphas": ALPHAS_TEXT, 1: "one"}
huge = 1000000000000000000000000000000
tags = {"b", "a"}
""".replace("ALPHAS_TEXT", repr(ALPHAS))

FUNCTIONS = """\
FEATURES = ["x", "x2"]


class Ridge:
    \"\"\"Ridge regression in numpy: a class of the notebook, handed over by value.\"\"\"

    def __init__(self, alpha):
        self.alpha = alpha

    def fit(self, X, y):
        A = X.to_numpy()
        self.coef_ = np.linalg.solve(A.T @ A + self.alpha * np.eye(A.shape[1]),
                                     A.T @ y.to_numpy())
        return self

    def predict(self, X):
        return X.to_numpy() @ self.coef_


def mse(model, frame):
    return float(((model.predict(frame[FEATURES]) - frame.target) ** 2).mean())
"""


def zoo_cells() -> list[str | tuple[str, list[str]]]:
    cells: list[str | tuple[str, list[str]]] = [
        ("import numpy as np\nimport pandas as pd", ["imports"]),
        (FUNCTIONS, ["functions"]),
        (PARAMETERS, ["pipeline-parameters"]),
        ("rng = np.random.default_rng(seed)\n"
         "raw = pd.DataFrame({\n"
         "    'x': rng.normal(size=rows),\n"
         "    'group': pd.Categorical(rng.choice(['a', 'b'], rows)),\n"
         "    'when': pd.date_range('2026-01-01', periods=rows, freq='h', tz='Europe/Paris'),\n"
         "}, index=pd.RangeIndex(1000, 1000 + rows, name='row'))\n"
         "raw.loc[raw.index[::17], 'x'] = np.nan", ["step:load"]),
        # untagged: joins `load`, as in Kale
        "raw['target'] = 3 * raw.x + (rng.normal(scale=0.1, size=rows) if noisy else 0)",
        ("raw = raw.dropna()\nraw['x2'] = raw.x ** 2", ["step:clean", "prev:load"]),
        ("cut = int(len(raw) * (1 - test_share))\n"
         "train, test = raw.iloc[:cut], raw.iloc[cut:]", ["step:split", "prev:clean"]),
        ("print('this cell is skipped')", ["skip"]),
    ]
    for index in range(MODELS):
        cells.append((f"model_{index} = Ridge(grid['alphas'][{index}])"
                      f".fit(train[FEATURES], train.target)\n"
                      f"error_{index} = mse(model_{index}, test)",
                      [f"step:ridge_{index}", "prev:split"]))
    errors = ", ".join(f"'ridge_{i}': error_{i}" for i in range(MODELS))
    cells += [
        (f"errors = {{{errors}}}\n"
         "best = min(errors, key=errors.get)\n"
         "best_error = errors[best]\n"
         "summary = repr({'title': title, 'shape': shape, 'label': label,\n"
         "                'tags': tags, 'huge': huge, 'one': grid[1], 'noisy': noisy})",
         ["block:pick", *(f"prev:ridge_{i}" for i in range(MODELS))]),
        ("print(best)\nprint(best_error)\nprint(summary)", ["pipeline-metrics"]),
    ]
    return cells


def zoo_notebook(path: Path) -> Path:
    """The notebook file, with Kale's notebook metadata."""
    return kale_notebook(path, zoo_cells(), kale={"experiment_name": "zoo",
                                                  "steps_defaults": ["label:team:ml"]})


EXPECTED_SUMMARY = repr({"title": "zoo ☕ café", "shape": (2, 3), "label": None,
                         "tags": {"a", "b"}, "huge": 10**30, "one": "one", "noisy": True})
