"""Shared test helpers: the dataset from ../shared (never the internet) and a tiny-run helper."""
import atexit
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / 'shared' / 'data' / 'tinyshakespeare.txt'
# the tests read a copy, so that gpt.py's cache of it (tinyshakespeare.txt.cache) is written beside the copy
DATA = pathlib.Path(tempfile.mkdtemp(prefix='gpt-tests-')) / 'tinyshakespeare.txt'
atexit.register(shutil.rmtree, DATA.parent, ignore_errors=True)
if SHARED.exists():
    shutil.copy(SHARED, DATA)
sys.path.insert(0, str(ROOT))

# a GPT small enough that a whole run (training, samples, more.txt) takes seconds on a CPU
TINY = ['--device=cpu', '--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16', '--batch_size=8',
        '--max_iters=20', '--eval_interval=10', '--eval_iters=2', '--compile=False', '--max_new_tokens=50']


@pytest.fixture(scope='session')
def data_path():
    assert DATA.exists(), f"the tests need tiny Shakespeare at {SHARED} (the shared/ folder beside the checkout)"
    return DATA


@pytest.fixture(scope='session')
def text(data_path):
    return data_path.read_text(encoding='utf-8')


def run_script(script, *args, cwd, env=None, timeout=300):
    """Run python SCRIPT ARGS in cwd and return the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_user_error(result, code, *words):
    """A failed run: the given exit code, one clear line on stderr naming words, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert 'Traceback' not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in message, message
