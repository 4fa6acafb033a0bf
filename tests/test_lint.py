"""The project lints itself: ruff with pyproject.toml's rules, and gpt.py within the lecture script's size."""
import subprocess
import sys

from conftest import ROOT


def test_ruff_check_is_clean():
    result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '.', '--output-format=concise'], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gpt_py_is_at_most_300_lines_of_at_most_100_columns():
    lines = (ROOT / 'gpt.py').read_text(encoding='utf-8').splitlines()
    assert len(lines) <= 300
    assert max(map(len, lines)) <= 100, [i + 1 for i, line in enumerate(lines) if len(line) > 100]
