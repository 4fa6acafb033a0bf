"""gpt_mlx.py is gpt.py's model in MLX: the same logits, the same AdamW step, the same checkpoints."""
import argparse
import os
import re

import numpy as np
import pytest
import torch

from conftest import assert_user_error, call
import extras
import gpt

try:  # requirements.txt installs it on Linux (mlx[cpu]) and Apple silicon, from PyPI
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
except ImportError:  # Windows, Intel Macs, an older Linux, or a machine that could not reach PyPI
    pytest.skip("MLX is not installed here (pip install 'mlx[cpu]' on Linux): gpt_mlx.py's tests need it",
                allow_module_level=True)

import gpt_mlx  # noqa: E402

CHARS = [chr(32 + i) for i in range(65)]
SHAPES = {  # (n_embd, n_head, n_layer, block_size, dropout)
    'cpu settings, smaller': (32, 2, 2, 16, 0.0),
    'lecture-shaped, tiny': (48, 6, 3, 16, 0.2),  # several heads; dropout set, and off in eval mode
}
# a run small enough for the suite: val loss 2.34-2.37 for seeds 1337 and 2-7 on the Intel Xeon (bigram: 2.5)
TINY_MLX = ['--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16', '--batch_size=16',
            '--max_iters=300', '--eval_interval=100', '--eval_iters=10', '--learning_rate=1e-2',
            '--max_new_tokens=50', '--more_chars=300']


def saved_gpt_model(tmp_path, shape, nudge=0.1):
    """A gpt.py model of shape, its weights moved off their init (so that every weight matters), saved
    in gpt.py's checkpoint format: (the model in eval mode, the checkpoint's path)."""
    n_embd, n_head, n_layer, block_size, dropout = shape
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, n_embd, n_head, n_layer, block_size, dropout)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * nudge)
    cfg = argparse.Namespace(n_embd=n_embd, n_head=n_head, n_layer=n_layer, block_size=block_size,
                             dropout=dropout)
    path = tmp_path / 'ckpt.pt'
    extras.checkpoints.save(path, model, CHARS, cfg, 0, 4.0)
    return model.eval(), path


@pytest.mark.parametrize('shape', SHAPES.values(), ids=SHAPES.keys())
def test_gpt_py_checkpoint_gives_the_same_logits_in_mlx_and_back(tmp_path, shape):
    model, path = saved_gpt_model(tmp_path, shape)
    ours, ckpt = gpt_mlx.load_checkpoint(str(path))
    idx = torch.randint(65, (4, shape[3]))
    expected = model(idx)[0].detach().numpy()
    got = np.array(ours(mx.array(idx.numpy()))[0])
    assert np.abs(got - expected).max() < 1e-4  # measured: 8e-7 and 1.3e-6, logits up to 2.6
    assert np.abs(expected).max() > 1  # logits that differ from token to token, not all near 0
    # and back: gpt_mlx.py's weights under the lecture's names load into gpt.py's model unchanged
    back = gpt.GPTLanguageModel(65, *shape)
    back.load_state_dict(gpt_mlx.state_dict(ours))  # strict: every name, the tril buffers too
    for name, w in model.state_dict().items():
        assert torch.equal(back.state_dict()[name], w), name
    # a model that MLX initialised gives gpt.py the same logits as it gives itself
    mx.random.seed(0)
    fresh = gpt_mlx.GPTLanguageModel(65, *shape)
    fresh.eval()
    back.load_state_dict(gpt_mlx.state_dict(fresh))
    diff = np.abs(np.array(fresh(mx.array(idx.numpy()))[0]) - back.eval()(idx)[0].detach().numpy())
    assert diff.max() < 1e-4


@pytest.mark.parametrize('shape', SHAPES.values(), ids=SHAPES.keys())
def test_one_adamw_step_from_the_same_weights_gives_the_same_loss_and_weights(tmp_path, shape):
    shape = shape[:4] + (0.0,)  # dropout draws different masks in the two frameworks
    model, path = saved_gpt_model(tmp_path, shape, nudge=0.0)
    ours, _ = gpt_mlx.load_checkpoint(str(path))
    ours.train()
    torch.manual_seed(1)
    x, y = torch.randint(65, (8, shape[3])), torch.randint(65, (8, shape[3]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # gpt.py's, at torch's defaults
    _, loss = model.train()(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    mlx_optimizer = optim.AdamW(learning_rate=1e-3, bias_correction=True)  # as gpt_mlx.train makes it
    mlx_loss, grads = nn.value_and_grad(ours, lambda m, a, b: m(a, b)[1])(ours, mx.array(x.numpy()),
                                                                         mx.array(y.numpy()))
    mlx_optimizer.update(ours, grads)
    assert abs(mlx_loss.item() - loss.item()) < 1e-4
    updated = gpt_mlx.state_dict(ours)
    moved = max((w - saved).abs().max().item() for w, saved in
                zip(model.state_dict().values(), torch.load(path, weights_only=True)['model'].values()))
    assert moved > 5e-4  # the step moved the weights by about the learning rate
    # measured 3e-5 at most: Adam's first step is about lr * sign(gradient), and a gradient near 0
    # can take either sign in float32 (at lr 3e-3 that was 8.5e-5)
    assert max((updated[k] - w).abs().max().item() for k, w in model.state_dict().items()) < 1e-4


def test_a_tiny_mlx_run_learns_and_gpt_py_samples_what_it_saved(data_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = call(gpt_mlx.main, *TINY_MLX, f'--input_file={data_path}')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('device: cpu, MLX ') and 'settings: cpu' in out
    assert '17,409 parameters; 65 characters in the vocabulary' in out  # gpt.py's count for this shape
    steps = re.findall(r'^step (\d+): train loss ([\d.]+), val loss ([\d.]+), [\d.]+s(, [\d,]+ tokens/s)?$',
                       out, re.M)
    assert [s[0] for s in steps] == ['0', '100', '200', '300'] and all(s[3] for s in steps[1:])
    assert float(steps[0][2]) > 4.0 and float(steps[-1][2]) < 2.5  # from ln(65) = 4.17 to below the bigram
    assert re.search(r'^trained in [\d.]+s \(\d+% of it evaluating\); peak memory [\d,]+ MiB', out, re.M)
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'more.txt']
    assert len((tmp_path / 'more.txt').read_text(encoding='utf-8')) == 301
    ckpt = torch.load(tmp_path / 'ckpt.pt', weights_only=True)
    assert ckpt['step'] == 300 and [h[0] for h in ckpt['history']] == [0, 100, 200, 300]
    # gpt.py samples from it, and greedy sampling gives the same 500 characters in both frameworks
    greedy = ['--sample', '--top_k=1', '--max_new_tokens=500', '--prompt=ROMEO:']
    theirs = call(gpt.main, *greedy, '--device=cpu')
    ours = call(gpt_mlx.main, *greedy)
    assert theirs.returncode == ours.returncode == 0, theirs.stderr + ours.stderr
    def text(r):
        return r.stdout.split('):\n', 1)[1]
    assert len(text(theirs)) == len('ROMEO:') + 500 + 1 and text(ours) == text(theirs)


def test_gpt_mlx_samples_from_a_checkpoint_gpt_py_trained(tiny_run, tmp_path):
    cwd, _ = tiny_run
    result = call(gpt_mlx.main, '--sample', '--prompt=ROMEO:', '--max_new_tokens=30', '--num_samples=2',
                  f'--ckpt_path={cwd / "ckpt.pt"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.count('\nROMEO:') == 2 and 'sample 2 of 2' in result.stdout


def test_bad_settings_are_one_line_as_in_gpt_py(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(call(gpt_mlx.main, '--n_head=5'), 2, 'divisible by n_head')
    assert_user_error(call(gpt_mlx.main, '--device=cuda'), 2, "device 'cuda' is not available")
    assert_user_error(call(gpt_mlx.main, '--dtype=float32'), 2, 'unrecognized arguments: --dtype')
    assert_user_error(call(gpt_mlx.main, '--sample'), 1, 'no checkpoint at ckpt.pt', 'python gpt_mlx.py')
    (tmp_path / 'ckpt.pt').write_bytes(b'not a checkpoint')
    assert_user_error(call(gpt_mlx.main, '--sample'), 1, 'not a checkpoint this gpt_mlx.py can load')
    other = {'model': {'w': torch.zeros(1)}, 'chars': CHARS, 'config': dict(n_embd=32, n_head=2, n_layer=1,
                                                                           block_size=16)}
    torch.save(other, tmp_path / 'ckpt.pt')
    assert_user_error(call(gpt_mlx.main, '--sample'), 1, "another model than gpt.py's")
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt']
