"""Mixed precision: bfloat16 where it is native, float16 with loss scaling on GPUs without it (T4, V100, P100)."""
import functools

import pytest
import torch

import extras
import gpt
from conftest import TINY


@pytest.mark.parametrize('capability, want', [((7, 5), 'float16'), ((6, 0), 'float16'), ((7, 0), 'float16'),
                                              ((8, 0), 'bfloat16'), ((9, 0), 'bfloat16')])
def test_auto_picks_bfloat16_on_cuda_only_where_it_is_native(monkeypatch, capability, want):
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device=None: capability)  # T4 7.5, V100 7.0, ...
    assert extras.precision.amp_dtype('cuda') == want
    assert extras.precision.amp_dtype('cuda', 'float32') == 'float32'
    assert extras.precision.amp_dtype('cuda', 'bfloat16') == 'bfloat16'


@pytest.mark.parametrize('native', [True, False])
def test_auto_on_the_cpu_and_mps(monkeypatch, native):
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: native)
    assert extras.precision.amp_dtype('cpu') == ('bfloat16' if native else 'float32')
    assert extras.precision.amp_dtype('mps') == 'float32'
    assert extras.precision.amp_dtype('cpu', 'float16') == 'float16'
    with extras.precision.autocast('cpu', 'float16'):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_float16_with_loss_scaling_trains_and_skips_steps_whose_gradients_overflow(data_path, tmp_path, monkeypatch):
    """For real on the CPU (autocast has float16 there): the scale starts far too high, so the first steps' gradients
    overflow; those steps are skipped and the scale halved each time, then training proceeds and the loss falls."""
    monkeypatch.setattr(torch.amp, 'GradScaler', functools.partial(torch.amp.GradScaler, init_scale=2.0 ** 40))
    scalers = []  # the scaler gpt.train makes
    monkeypatch.setattr(extras.precision, 'grad_scaler',
                        lambda cfg, make=extras.precision.grad_scaler: scalers.append(make(cfg)) or scalers[-1])
    cfg = extras.config.parse_config([*TINY, '--dtype=float16', '--max_iters=60', '--eval_interval=59',
                                      '--learning_rate=3e-3', f'--input_file={data_path}',
                                      f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    torch.manual_seed(cfg.seed)
    model = gpt.GPTLanguageModel(65, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, cfg.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    best = gpt.train(cfg, model=model, optimizer=optimizer)
    scaler = scalers[0]
    assert scaler.is_enabled()
    skipped = round(40 - torch.log2(torch.tensor(scaler.get_scale())).item())  # each skipped step halved the scale
    assert 1 <= skipped < 30, scaler.get_scale()
    assert optimizer.state[model.lm_head.weight]['step'] == 60 - skipped  # the skipped steps changed nothing
    history = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['history']
    assert history[0][3] > 4.0 and best < history[0][3] - 0.8  # it learned: from about ln 65 to well below (fell
    # 1.00-1.08 for model seeds 1337, 0-3; Intel Xeon, 2026-12-02)


def test_resume_puts_back_the_loss_scale(tmp_path):
    cfg = extras.config.parse_config(['--device=cpu', '--n_embd=32', '--n_head=2', '--dtype=float16',
                            f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    model = gpt.GPTLanguageModel(65, 32, 2, cfg.n_layer, cfg.block_size)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    scaler.scale(torch.ones(()))  # the scale is made on first use
    chars = [chr(32 + i) for i in range(65)]
    extras.checkpoints.save(tmp_path / 'ckpt.resume.pt', model, chars, cfg, 10, 3.0, [(0, 0.1, 4.2, 4.2)],
                        optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=torch.get_rng_state(),
                        cuda_rng=None)
    fresh = torch.amp.GradScaler('cpu')
    assert extras.checkpoints.load_resume(cfg, model, optimizer, chars, fresh) == (10, 3.0, [(0, 0.1, 4.2, 4.2)])
    assert fresh.get_scale() == 1024.0


def test_dtype_setting_is_checked(capsys):
    with pytest.raises(SystemExit) as e:
        extras.config.parse_config(['--device=cpu', '--dtype=half'], vars(gpt))
    assert e.value.code == 2
    assert capsys.readouterr().err == ("gpt.py: error: --dtype='half' is not allowed: use auto, bfloat16, float16 or "
                                       "float32; --help lists every setting\n")
