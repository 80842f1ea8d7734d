"""Runs ``python -m MODULE ARGS...`` in this process and prints the seconds it took.

Imports happen before the clock starts (for both implementations), so the
figure is the step's own work, not interpreter start-up.

Usage: python bench/_timed_run.py MODULE ARGS...
"""
from __future__ import annotations

import importlib
import json
import runpy
import sys
import time


def main() -> None:
    module, args = sys.argv[1], sys.argv[2:]
    importlib.import_module(module)          # warm imports (torch, PIL, pandas...)
    sys.argv = [module, *args]
    t = time.perf_counter()
    try:
        runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    print(json.dumps({'seconds': time.perf_counter() - t}), file=sys.__stdout__)


if __name__ == '__main__':
    main()
