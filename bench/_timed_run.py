"""Runs ``python -m MODULE ARGS...`` in this process and prints the seconds it took.

Imports happen before the clock starts (for both implementations), so the
figure is the step's own work, not interpreter start-up.

Usage: python bench/_timed_run.py MODULE ARGS...
The bench scripts call ``timed(python, module, *args)``, which runs this file with
another interpreter (ours, or the original's venv) and returns the seconds.
"""
from __future__ import annotations

import importlib
import json
import os
import runpy
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def timed(python: str, module: str, *args: str) -> float:
    """Seconds ``python -m module args`` takes (imports excluded), run in the repo."""
    proc = subprocess.run([python, str(Path(__file__).resolve()), module, *args],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONPATH': ''})
    if proc.returncode != 0:
        raise RuntimeError(f'{module} failed:\n{proc.stderr[-2000:]}')
    return float(json.loads(proc.stdout.strip().splitlines()[-1])['seconds'])


def run_timed(module: str, args: Sequence[str],
              prepare: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Runs ``python -m module args`` here after importing it, and returns
    {'seconds': ...} plus what ``prepare`` (called with that dict before the clock
    starts, e.g. to wrap functions) records in it."""
    importlib.import_module(module)          # warm imports (torch, PIL, pandas...)
    record: dict[str, Any] = {}
    if prepare is not None:
        prepare(record)
    sys.argv = [module, *args]
    t = time.perf_counter()
    try:
        runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    record['seconds'] = time.perf_counter() - t
    return record


def main() -> None:
    print(json.dumps(run_timed(sys.argv[1], sys.argv[2:])), file=sys.__stdout__)


if __name__ == '__main__':
    main()
