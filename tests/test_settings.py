"""No traceback for any user mistake, and no lost training: every setting checked, edge values, resume."""
import contextlib
import io
import math
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import extras
import gpt
from conftest import CPU, DATA, ROOT, TINY, assert_user_error, call, run_script

pytestmark = pytest.mark.usefixtures('data_path')  # DATA below: tiny Shakespeare, found or downloaded
_, DEFAULTS, _ = extras.config.parse_settings(gpt.__file__, vars(gpt), [])
NAMES = sorted(DEFAULTS)

# values a learner might type, and values nobody should: zero, negative, huge, NaN, infinite, wrong types
ODD = st.sampled_from(['0', '-1', '1', '2', '0.5', '-0.5', '1e-3', '1e9', str(2**63), '10' * 30, 'nan', 'inf',
                       '-inf', 'True', 'False', 'none', '', 'abc', '/', '.', 'ckpt.pt', 'x/y/z.pt', '☃'])
VALUES = st.one_of(ODD, st.integers(-10**20, 10**20).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=12))


def parse(args):
    """extras.config.parse_config(args) in-process: (the settings or None, the exit code, what it printed to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return extras.config.parse_config(args, vars(gpt)), 0, err.getvalue()
        except SystemExit as e:
            return None, e.code, err.getvalue()


@settings(max_examples=400, deadline=None, derandomize=True)
@given(name=st.sampled_from(NAMES), value=VALUES)
def test_every_setting_takes_any_value_or_refuses_it_with_one_line(name, value):
    cfg, code, err = parse(['--device=cpu', f'--{name}={value}'])
    if cfg is None:
        assert code == 2 and len(err.splitlines()) == 1, err  # one line, no usage dump
        assert re.fullmatch(r'gpt\.py: error: \S.*; --help lists every setting\n', err), err
        return
    # accepted: then it is a value gpt.py can use
    assert cfg.batch_size >= 1 and cfg.block_size >= 1 and cfg.eval_interval >= 1 and cfg.eval_iters >= 1
    assert cfg.max_iters >= 0 and cfg.warmup_iters >= 0 and cfg.n_layer >= 0 and cfg.max_new_tokens >= 0
    assert cfg.more_chars >= 0
    assert cfg.n_embd % cfg.n_head == 0 and 0 <= cfg.dropout < 1 and 0 <= cfg.seed < 2**63
    assert math.isfinite(cfg.learning_rate) and cfg.learning_rate > 0
    assert math.isfinite(cfg.temperature) and cfg.temperature > 0 and (cfg.top_k is None or cfg.top_k >= 1)
    assert cfg.input_file and cfg.ckpt_path


# values that end quickly whatever they mean (huge counts would train for hours; in-process checks cover them)
SMALL = st.sampled_from(['-1', '0', '1', '2', '3', '0.5', '0.999', 'nan', 'inf', '-inf', '1e9', 'abc', ''])


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(['batch_size', 'block_size', 'max_iters', 'eval_interval', 'eval_iters', 'n_layer',
                             'n_head', 'dropout', 'learning_rate', 'warmup_iters', 'max_new_tokens', 'top_k']),
       value=SMALL)
def test_real_runs_succeed_or_fail_with_one_line_and_leave_no_partial_file(name, value):
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # in this process, as gpt.py runs there
        args = [a for a in TINY if not a.startswith(f'--{name}=')] + [f'--{name}={value}', f'--input_file={DATA}']
        result = call(gpt.main, *args)
        assert result.returncode in (0, 1, 2) and 'Traceback' not in result.stderr, result.stderr
        if result.returncode:
            assert len(result.stderr.splitlines()) == 1 and ': error: ' in result.stderr, result.stderr
        left = {p.name for p in pathlib.Path(tmp).iterdir()}
        assert left <= {'ckpt.pt', 'more.txt'}, left  # no temporary or resume files left behind
        if result.returncode == 0:
            assert left == {'ckpt.pt', 'more.txt'}
            torch.load(f'{tmp}/ckpt.pt', weights_only=True)  # complete, loadable


# ----------------------------------------------------------------------------- documented edge values
def test_max_iters_0_evaluates_and_samples_the_untrained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = call(gpt.main, *TINY, '--max_iters=0', f'--input_file={DATA}')
    assert result.returncode == 0, result.stderr
    assert re.findall(r'^step (\d+):', result.stdout, re.M) == ['0']
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['val_loss'] > 4.0  # about ln 65: untrained


def test_n_layer_0_and_long_warmup_and_sparse_evaluation_still_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in TINY if not a.startswith(('--n_layer', '--eval_interval'))]
    result = call(gpt.main, *args, '--n_layer=0', '--warmup_iters=1000', '--eval_interval=1000', f'--input_file={DATA}')
    assert result.returncode == 0, result.stderr
    assert re.findall(r"^step (\d+):", result.stdout, re.M) == ["0", "20"]  # the first step, and after the last


@pytest.mark.parametrize('args, words', [
    (['--ckpt_path=no/such/folder/ckpt.pt'], ['--ckpt_path', 'must exist']),
    (['--ckpt_path=.'], ['--ckpt_path', 'not a folder']),
    (['--input_file=.'], ['--input_file', 'not a folder']),
    (['--dropout=1'], ['--dropout=1.0', 'below 1']),
    (['--learning_rate=inf'], ['--learning_rate=inf', 'above 0']),
    (['--batch_size=0'], ['--batch_size=0', '1 or more']),
    (['--max_iters=-5'], ['--max_iters=-5', '0 or more']),
    (['--seed=-1'], ['--seed=-1']),
])
def test_bad_settings_and_paths_are_refused_with_the_setting_named(args, words):
    cfg, code, err = parse(['--device=cpu', *args])
    assert cfg is None and code == 2 and len(err.splitlines()) == 1, err
    assert all(word in err for word in words), err


def test_a_refused_setting_stops_the_script_before_anything_is_written(tmp_path):
    assert_user_error(run_script('gpt.py', '--ckpt_path=no/such/folder/ckpt.pt', cwd=tmp_path), 2, '--ckpt_path')
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


def test_more_txt_that_cannot_be_written_is_refused_before_training(tmp_path):
    (tmp_path / 'more.txt').mkdir()
    result = run_script('gpt.py', *TINY, f'--input_file={DATA}', cwd=tmp_path)
    assert_user_error(result, 2, 'more.txt')
    assert not (tmp_path / 'ckpt.pt').exists()


def test_out_of_memory_is_one_line():
    result = run_script('gpt.py', *TINY, '--n_embd=1000000000', '--n_head=1', f'--input_file={DATA}', cwd=ROOT)
    assert_user_error(result, 1, 'out of memory', '--n_embd')


# ----------------------------------------------------------------------------- resume
RESUMABLE = [a for a in TINY if not a.startswith(('--max_iters', '--eval_interval'))] + \
    ['--max_iters=120', '--eval_interval=10', '--dropout=0.1', f'--input_file={DATA}']  # dropout: the RNG matters


def steps(out):
    return re.findall(r'^step (\d+): train loss ([\d.]+), val loss ([\d.]+)', out, re.M)


def test_a_crashed_run_resumed_ends_with_the_same_losses_as_one_never_stopped(tmp_path):
    whole = run_script('gpt.py', *RESUMABLE, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    (tmp_path / 'ckpt.pt').unlink()
    assert not (tmp_path / 'ckpt.resume.pt').exists()  # a finished run keeps nothing to resume
    proc = subprocess.Popen([sys.executable, str(ROOT / 'gpt.py'), *RESUMABLE], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith('step 30:'):
            break
    proc.kill()  # a crash: no handler runs (SIGKILL; TerminateProcess on Windows)
    proc.communicate(timeout=60)
    assert (tmp_path / 'ckpt.resume.pt').exists()  # (a kill in the middle of a write may leave a .tmp- file beside it)
    resumed = run_script('gpt.py', *RESUMABLE, '--resume', cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    first = int(re.search(r'resuming \S+ at step (\d+)', resumed.stdout).group(1))
    assert 20 <= first <= 110
    tail = [s for s in steps(whole.stdout) if int(s[0]) >= first]
    assert steps(resumed.stdout) == tail  # the same losses, step for step, to the end
    assert torch.load(tmp_path / 'ckpt.pt', weights_only=True)['val_loss'] == \
        pytest.approx(min(float(s[2]) for s in steps(whole.stdout)), abs=1e-4)
    assert not (tmp_path / 'ckpt.resume.pt').exists()


def test_resume_errors(tmp_path):
    cfg = extras.config.parse_config(['--device=cpu', '--n_embd=32', '--n_head=2',
                                      f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    model = gpt.GPTLanguageModel(65, 32, 2, cfg.n_layer, cfg.block_size)
    optimizer = torch.optim.AdamW(model.parameters())
    chars = [chr(32 + i) for i in range(65)]
    with pytest.raises(extras.errors.UserError, match='nothing to resume'):
        extras.checkpoints.load_resume(cfg, model, optimizer, chars)
    extras.checkpoints.save(tmp_path / 'ckpt.resume.pt', model, chars, cfg, 10, 3.0, optimizer=optimizer.state_dict(),
                        rng=torch.get_rng_state(), cuda_rng=None)
    assert extras.checkpoints.load_resume(cfg, model, optimizer, chars) == (10, 3.0, [])
    other = extras.config.parse_config(['--device=cpu', '--n_embd=64', '--n_head=2', '--learning_rate=1e-3',
                              f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    with pytest.raises(extras.errors.UserError, match='other settings') as e:
        extras.checkpoints.load_resume(other, model, optimizer, chars)
    assert str(e.value) == (f"the run at {tmp_path / 'ckpt.resume.pt'} had other settings or text: resume with the "
                            f"same ones (--learning_rate={CPU['learning_rate']} --n_embd=32)")  # the stopped run's
    with pytest.raises(extras.errors.UserError, match='other characters'):
        extras.checkpoints.load_resume(cfg, model, optimizer, chars[:-1] + ['~'])
    (tmp_path / 'ckpt.resume.pt').write_bytes(b'garbage')
    with pytest.raises(extras.errors.UserError, match='ckpt.resume.pt is not a state .* start a new run'):
        extras.checkpoints.load_resume(cfg, model, optimizer, chars)
    (tmp_path / 'fresh').mkdir()
    assert_user_error(run_script('gpt.py', *RESUMABLE, '--resume', cwd=tmp_path / 'fresh'), 1, 'nothing to resume')
