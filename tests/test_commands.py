"""Every step is also an installed command, ``ct-<step>`` (setup.cfg console_scripts)."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from classification.commands import COMMANDS
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def test_setup_cfg_installs_every_step():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    lines = [ln.split('=') for ln in cfg['options.entry_points']['console_scripts'].split('\n')
             if ln.strip()]
    installed = {name.strip(): target.strip() for name, target in lines}
    scripts = {p.stem for p in (REPO / 'classification').glob('*.py')
               if 'def main(' in p.read_text() and p.stem != 'commands'}
    assert {m.rsplit('.', 1)[1] for m in COMMANDS.values()} >= scripts
    assert set(installed) == set(COMMANDS)
    for name, module in COMMANDS.items():
        assert installed[name] == f'classification.commands:{module.rsplit(".", 1)[1]}'


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_each_command_runs_its_step(name):
    proc = subprocess.run([str(BIN / name), '--help'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f'usage: {name}')
    assert 'Example' in proc.stdout or 'example' in proc.stdout


def test_a_command_refuses_in_one_line_and_suggests_flags(tmp_path):
    proc = subprocess.run([str(BIN / 'ct-csv-to-json'), str(tmp_path / 'none.csv'), '-'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f'error: {tmp_path / "none.csv"}: file not found']
    proc = subprocess.run([str(BIN / 'ct-run-classifier'), 'm', 'c', 'o', '--batchsize', '3'],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'did you mean --batch-size?' in proc.stderr


def test_every_module_is_in_the_import_layers():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / 'setup.cfg')
    layers = cfg['importlinter:contract:layers']['layers']
    named = {m.strip() for m in layers.replace('|', ' ').replace(':', ' ').split()}
    modules = {f'{p.parent.name}.{p.stem}' for folder in ('classification', 'detection')
               for p in (REPO / folder).glob('*.py')
               if p.stem not in ('__init__', 'commands')}
    assert modules - named == set()
