"""The ``mlpipe`` command's entry point: a local run's head start first, then the command.

``mlpipe run`` spends ~0.15 s importing its modules and planning before its first step can
start, and the first step's kernel needs ~0.1 s to fork and come up. The head start
(``executors.head_start``) overlaps the two, but begun from ``cli.main`` it came too late:
after ``cli.main``'s imports (~50 ms), and then its fork waited ~90 ms for the GIL behind
the planning's imports. Begun here, before those imports, it forks at once (~10 ms, when
the step template is up) and the kernel is ready when the plan is.

Only the notebook's path is looked for here, without the argument parser (importing it
and building the parser is what this avoids): a guess that is wrong (an option's value
taken for the notebook) costs nothing but the head start, which ``cmd_run`` ends unused.
"""

from __future__ import annotations

import sys
from pathlib import Path


def console_main() -> int:
    """The ``mlpipe`` command (``cli.main.console_main``), a local run's head start begun
    first."""
    notebook = local_run_notebook(sys.argv[1:])
    if notebook is None:
        return _command()
    from mlpipe_jupyter.executors import head_start

    head_start.begin(notebook)
    try:
        return _command()
    finally:
        # the run took it or ended it; not when the arguments were refused before the run
        # began (argparse exits): ended here, it exits cleanly, where the template would
        # kill it with the command and its kernel's folder would wait for the next run
        head_start.end_unused()


def _command() -> int:
    # imported only now: these imports are what the head start overlaps
    from mlpipe_jupyter.cli.main import console_main as command_main

    return command_main()


def local_run_notebook(arguments: list[str]) -> Path | None:
    """The notebook of ``mlpipe run ... NOTEBOOK.ipynb ...`` when its steps run locally by
    default (no ``--compute``, which argparse also takes abbreviated: ``--comp``), else None."""
    if not arguments or arguments[0] != "run":
        return None
    options = arguments[1:]
    if any(arg.startswith("--c") or arg in ("-h", "--help") for arg in options):
        return None
    for arg in options:
        if arg.endswith(".ipynb") and not arg.startswith("-"):
            return Path(arg)
    return None


if __name__ == "__main__":
    sys.exit(console_main())
