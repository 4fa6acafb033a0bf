"""Training really learns: the lecture's bigram baseline, and a small GPT that beats it clearly."""
import torch

import bigram
import extras
import gpt


def test_bigram_reaches_the_lectures_2_5(data_path, capsys):
    losses = bigram.main([f'--input_file={data_path}', '--device=cpu', '--eval_iters=50'])  # its 3000 steps
    assert 2.4 < losses['val'] < 2.6  # the lecture: about 2.5 (measured here: 2.49)
    assert len(capsys.readouterr().out.rsplit('val loss', 1)[1].split('\n', 1)[1]) >= 500


def test_a_small_gpt_learns_well_below_the_bigram(data_path, tmp_path):
    cfg = extras.config.parse_config(['--device=cpu', '--n_layer=2', '--n_embd=64', '--n_head=2', '--block_size=32',
                            '--batch_size=32', '--max_iters=500', '--eval_interval=250', '--eval_iters=10',
                            '--learning_rate=3e-3', '--warmup_iters=30', f'--input_file={data_path}',
                            f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    torch.manual_seed(cfg.seed)
    gpt.train(cfg)
    val = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['val_loss']
    assert val < 2.15, val  # the bigram stops at 2.49; measured 2.05-2.08 for seeds 1337, 1-4 in bfloat16 and
    # float32 (--dtype), 8-12 s each (Intel Xeon, 2026-12-01)


def test_cpu_settings_spend_at_most_a_tenth_on_evaluation():
    """Each estimate costs 2 * eval_iters forward passes; a training step about 3 (forward and backward)."""
    cfg = extras.config.parse_config(['--device=cpu'], vars(gpt))
    evals = cfg.max_iters // cfg.eval_interval + 1
    eval_passes, train_passes = evals * 2 * cfg.eval_iters, 3 * cfg.max_iters
    assert eval_passes / (eval_passes + train_passes) < 0.10


def test_compile_on_and_off_give_the_same_losses(data_path, tmp_path):
    """The speed switches change speed only: torch.compile and eager agree on a tiny model."""
    losses = {}
    for compiled in (False, True):
        cfg = extras.config.parse_config(['--device=cpu', '--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16',
                                '--batch_size=8', '--max_iters=30', '--eval_interval=29', '--eval_iters=4',
                                f'--compile={compiled}', f'--input_file={data_path}',
                                f'--ckpt_path={tmp_path / f"{compiled}.pt"}'], vars(gpt))
        torch.manual_seed(cfg.seed)
        gpt.train(cfg)
        losses[compiled] = torch.load(tmp_path / f'{compiled}.pt', weights_only=True)['val_loss']
    assert abs(losses[True] - losses[False]) < 0.02, losses


def test_a_failing_compile_falls_back_to_plain_pytorch(monkeypatch, capsys):
    def broken(model):
        raise RuntimeError('no compiler here')
    monkeypatch.setattr(torch, 'compile', broken)
    model = gpt.GPTLanguageModel(65, 32, 2, 1, 16, 0.0)
    batch = (torch.zeros((1, 16), dtype=torch.long), torch.zeros((1, 16), dtype=torch.long))
    assert extras.speed.try_compile(model, batch, 'cpu') is model
    assert 'torch.compile failed (RuntimeError)' in capsys.readouterr().out
