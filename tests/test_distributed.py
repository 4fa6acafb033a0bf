"""torchrun: two processes with batch B each train exactly as one process with batch 2B; only rank 0 writes."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import DATA, ROOT, TINY

pytestmark = pytest.mark.usefixtures('data_path')  # DATA below: tiny Shakespeare, found or downloaded
# one optimizer step is compared: the checkpoint at step 1 holds the weights after it (val loss falls, so it is saved)
ARGS = [a for a in TINY if not a.startswith(('--max_iters', '--eval_interval', '--batch_size'))] + [
    '--max_iters=1', '--eval_interval=1', '--learning_rate=1e-3', '--dropout=0', f'--input_file={DATA}',
    '--dtype=float32']  # in bfloat16 the rounding of a gradient summed over 8 rows differs from two sums over 4,
# and Adam's first step, about lr * sign(gradient), turns that into lr-sized differences where a gradient is near 0


def test_two_gloo_processes_with_batch_b_match_one_with_batch_2b(tmp_path):
    for folder in ('two', 'one'):
        (tmp_path / folder).mkdir()
    env = {**os.environ, 'GLOO_SOCKET_IFNAME': 'lo', 'OMP_NUM_THREADS': '1'}
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
                          str(ROOT / 'gpt.py'), *ARGS, '--batch_size=4'],
                         cwd=tmp_path / 'two', env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(ROOT / 'gpt.py'), *ARGS, '--batch_size=8'],
                         cwd=tmp_path / 'one', env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # only rank 0 printed, evaluated, saved and sampled: every line once, one checkpoint, no resume state left
    assert 'torchrun: 2 processes, each on 1/2 of every batch' in two.stdout
    for line in ('parameters;', 'step 0:', 'step 1:', 'trained in', 'sampling from', 'wrote 300'):
        assert two.stdout.count(line) == 1, two.stdout
    assert sorted(os.listdir(tmp_path / 'two')) == ['ckpt.pt', 'more.txt']
    a = torch.load(tmp_path / 'two' / 'ckpt.pt', weights_only=True)
    b = torch.load(tmp_path / 'one' / 'ckpt.pt', weights_only=True)
    assert a['step'] == b['step'] == 1  # both saved after their one step
    moved = 0
    for name, w in b['model'].items():
        torch.testing.assert_close(a['model'][name], w, rtol=0, atol=1e-7, msg=name)
        moved += (w != 1).sum().item() if name.endswith(('ln1.weight', 'ln2.weight', 'ln_f.weight')) else 0
    assert moved > 0  # the step really changed the weights (LayerNorm weights start at exactly 1)
