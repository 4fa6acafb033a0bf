"""bench.py, the speed report, at tiny sizes: every row is there, what could not be measured says so, bad settings
get one line."""
import re

import pytest
import torch

import bench
from conftest import ROOT, assert_user_error, run_script

TINY = ['--device=cpu', '--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16', '--batch_size=4',
        '--steps=2', '--rounds=2', '--round_seconds=1', '--sample_seconds=0.2']


def bench_with(compile, tmp_path, *args):
    """bench.py with torch.compile replaced (tests/test_training.py runs the real one; here it would cost 30 s)."""
    script = tmp_path.parent / f'bench_{tmp_path.name}.py'
    script.write_text(f"import sys, torch\nsys.path.insert(0, {str(ROOT)!r})\nimport bench, extras\n{compile}\n"
                      "extras.errors.run(bench.main)\n", encoding='utf-8')
    return run_script(str(script), *TINY, *args, cwd=tmp_path, timeout=600)


def test_the_report_has_every_row_for_both_sets(data_path, tmp_path):
    result = bench_with('torch.compile = lambda model: model', tmp_path, f'--input_file={data_path}')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('## bench.py on cpu: ') and f'PyTorch {torch.__version__}' in out
    assert [m for m in re.findall(r'^### settings: (\w+)', out, re.M)] == ['cpu', 'lecture']  # the device's own first
    for row in ('step time', 'tokens/s', 'model FLOPs utilisation', 'evaluation at eval_iters 200', 'peak memory',
                'sampling, context full'):
        assert out.count(f'| {row} |') == 2, row
    assert out.count('| model FLOPs utilisation | peak unknown for ') == 2  # no data-sheet peak for a CPU
    levers = re.findall(r'^\| (compile|attention|autocast|heads) \| (.*?) \| (.*?) \| (.*) \|$', out, re.M)
    assert [lever[0] for lever in levers] == ['compile', 'attention', 'autocast']  # for the first set only
    for lever in levers:
        assert re.fullmatch(r'[\d,.]+ -> [\d,.]+ ms \([\d.]+x the speed\)', lever[3]), lever
    assert levers[0][1:3] == ('off', next(row[2] for row in levers if row[0] == 'compile'))
    assert re.search(r'compiled in [\d.]+ s', levers[0][2])
    assert re.search(r'\| sampling, context full \| [\d,]+ characters/s ', out)
    assert list(tmp_path.iterdir()) == []  # it writes nothing


def test_a_figure_that_cannot_be_measured_says_so(data_path, tmp_path):
    """torch.compile failing (no compiler): the compile lever's row says why, the others are measured."""
    result = bench_with("def broken(model):\n    raise RuntimeError('no compiler')\ntorch.compile = broken", tmp_path,
                        '--sets=cpu', f'--input_file={data_path}')
    assert result.returncode == 0, result.stderr
    assert '| compile | off | on | not measured: compile failed (RuntimeError) |' in result.stdout
    assert re.search(r"^\| attention \| explicit \| fused \| [\d,.]+ -> [\d,.]+ ms", result.stdout, re.M)


@pytest.mark.parametrize('args, words', [
    (['--sets=fast'], ['--sets', "'fast'"]),
    (['--levers=some'], ['--levers', "'some'"]),
    (['--steps=0'], ['--steps']),
    (['--sample_seconds=nan'], ['--sample_seconds']),
    (['--n_head=5', '--n_embd=32'], ['n_embd (32)', 'n_head (5)']),
    (['--no_such=1'], ['--no_such']),
])
def test_bad_settings_get_one_line(args, words, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(['--device=cpu', *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and ': error: ' in err, err
    assert all(word in err for word in words), err


def test_bench_from_the_command_line_refuses_in_one_line(tmp_path):
    assert_user_error(run_script('bench.py', '--device=cpu', '--sets=fast', cwd=tmp_path), 2, '--sets')
