"""Training really learns: the lecture's bigram baseline, and a small GPT that beats it clearly."""
import torch

import bigram
import gpt


def test_bigram_reaches_the_lectures_2_5(data_path, capsys):
    losses = bigram.main(str(data_path))
    assert 2.4 < losses['val'] < 2.6  # the lecture: about 2.5 (measured here: 2.49)
    assert len(capsys.readouterr().out.rsplit('val loss', 1)[1].split('\n', 1)[1]) >= 500


def test_a_small_gpt_learns_well_below_the_bigram(data_path, tmp_path):
    cfg = gpt.parse_config(['--device=cpu', '--n_layer=2', '--n_embd=64', '--n_head=4', '--block_size=32',
                            '--batch_size=32', '--max_iters=500', '--eval_interval=250', '--eval_iters=10',
                            '--learning_rate=3e-3', '--warmup_iters=30', f'--input_file={data_path}',
                            f'--ckpt_path={tmp_path / "ckpt.pt"}'])
    torch.manual_seed(cfg.seed)
    gpt.train(cfg)
    val = torch.load(tmp_path / 'ckpt.pt', weights_only=True)['val_loss']
    assert val < 2.15, val  # measured: VAL on a 2-core CPU, about 10 s; the bigram stops at 2.49


def test_cpu_settings_spend_at_most_a_tenth_on_evaluation():
    """Each estimate costs 2 * eval_iters forward passes; a training step about 3 (forward and backward)."""
    cfg = gpt.parse_config(['--device=cpu'])
    evals = cfg.max_iters // cfg.eval_interval + 1
    eval_passes, train_passes = evals * 2 * cfg.eval_iters, 3 * cfg.max_iters
    assert eval_passes / (eval_passes + train_passes) < 0.10
