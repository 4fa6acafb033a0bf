"""EX3 (pretrain, then fine-tune with --init_from) and EX4 (changes from the literature) at tiny sizes."""
import argparse
import functools
import json
import random
import re
import time

import pytest
import torch

import extras
import gpt
from conftest import DATA, TINY, assert_user_error, call, run_script

import ex3_pretrain_finetune as ex3
import ex4_literature as ex4
import ex4_speedrun as speedrun

pytestmark = pytest.mark.usefixtures('data_path')  # DATA below: tiny Shakespeare, found or downloaded
VOCAB = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # tiny Shakespeare's 65


def generated(path, n, seed):
    """n characters of made-up words over tiny Shakespeare's 65 characters (every one of them occurs)."""
    rng = random.Random(seed)
    words = [''.join(rng.choice(VOCAB[2:]) for _ in range(rng.randint(1, 7))) for _ in range(300)]
    text = VOCAB + ' '.join(rng.choice(words) + rng.choice(' \n') for _ in range(n // 5))
    path.write_text(text[:n], encoding='utf-8')
    return path


def cfg_for(text, ckpt, *more):
    return extras.config.parse_config([*TINY, f'--input_file={text}', f'--ckpt_path={ckpt}', *more], vars(gpt))


# ----------------------------------------------------------------------------- EX3 and --init_from
def test_init_from_starts_exactly_from_the_checkpoints_weights(tmp_path):
    text = generated(tmp_path / 'a.txt', 20000, 0)
    gpt.train(cfg_for(text, tmp_path / 'pre.pt'))
    other = generated(tmp_path / 'b.txt', 20000, 1)  # other text, same characters
    gpt.train(cfg_for(other, tmp_path / 'start.pt', f'--init_from={tmp_path / "pre.pt"}', '--max_iters=0'))
    pre, start = (torch.load(tmp_path / f, weights_only=True)['model'] for f in ('pre.pt', 'start.pt'))
    assert all(torch.equal(pre[k], start[k]) for k in pre)  # max_iters=0 saves the model it starts from


def test_init_from_refuses_other_characters_or_sizes(tmp_path):
    text = generated(tmp_path / 'a.txt', 20000, 0)
    gpt.train(cfg_for(text, tmp_path / 'pre.pt'))
    (tmp_path / 'abc.txt').write_text('abc ' * 1000, encoding='utf-8')
    with pytest.raises(extras.errors.UserError, match='other characters'):
        gpt.train(cfg_for(tmp_path / 'abc.txt', tmp_path / 'x.pt', f'--init_from={tmp_path / "pre.pt"}'))
    with pytest.raises(extras.errors.UserError, match='other sizes'):
        gpt.train(cfg_for(text, tmp_path / 'x.pt', f'--init_from={tmp_path / "pre.pt"}', '--n_embd=64'))
    with pytest.raises(SystemExit):
        cfg_for(text, tmp_path / 'x.pt', f'--init_from={tmp_path / "missing.pt"}')
    assert not (tmp_path / 'x.pt').exists()


def test_ex3_pretrains_then_fine_tunes_from_those_weights(tmp_path, monkeypatch, capsys):
    corpus = generated(tmp_path / 'corpus.txt', 30000, 2)
    small = generated(tmp_path / 'small.txt', 6000, 3)
    started_from = []
    plain = extras.checkpoints.init_weights
    monkeypatch.setattr(extras.checkpoints, 'init_weights', lambda model, path, chars, f=plain:
                        started_from.append(torch.load(path, weights_only=True)['step']) or f(model, path, chars))
    rows = ex3.main([f'--corpus={corpus}', f'--input_file={small}', '--pretrain_iters=12', '--finetune_iters=6',
                     '--eval_iters=2', '--seeds=1'])
    out = capsys.readouterr().out
    assert started_from == [12]  # the fine-tune loaded the pretrained checkpoint (its last step), and only it
    (seed, on_corpus, zero_shot, _, tuned, _, scratch, _), = rows
    assert seed == 1 and tuned != scratch and abs(on_corpus['train'] - on_corpus['val']) < 0.2
    assert '| 1 |' in out and 'pretrained, fine-tuned at lr 0.001' in out


def test_ex3_maps_any_corpus_onto_tiny_shakespeares_characters(tmp_path):
    text = 'Caf\u00e9 \u201cna\u00efve\u201d {1900} \u00fcber ' * 400  # accents, curly quotes, braces, digits
    (tmp_path / 'mine.txt').write_text(text, encoding='utf-8')
    mapped = ex3.mapped_corpus(str(tmp_path / 'mine.txt'), list(VOCAB))
    assert mapped == str(tmp_path / 'mine.65.txt')
    chars, data = extras.corpus.load_text(mapped, 64)
    assert chars == list(VOCAB) and len(data) > 6000  # exactly the 65, in tiny Shakespeare's order
    assert (tmp_path / 'mine.65.txt').read_text(encoding='utf-8').startswith('Cafe naive uber Cafe')


def test_ex3_corpus_helpers_keep_the_vocabulary_and_find_shared_strings():
    assert ex3.to_vocabulary('Caf\u00e9 \u201cnaïve\u201d\t"so"  (1900)', VOCAB) == "Cafe naive 'so' "
    line = 'To be, or not to be, that is the question: whether tis nobler'  # 61 characters
    starts = ex3.shared_strings('x' * 10 + line + 'y' * 10, f'ABC {line} in the mind')
    assert starts == list(range(10, 10 + len(line) - 49))  # every 50-character window inside the line
    assert ex3.shared_strings('z' * 100, line) == []


# ----------------------------------------------------------------------------- EX4
SMALL = argparse.Namespace(n_embd=32, n_head=2, n_layer=2, block_size=16)


@pytest.mark.parametrize('variant', ['baseline', *ex4.FEATURES, 'rope+tie+swiglu+qknorm'])
def test_each_change_keeps_the_model_causal_and_learns(variant):
    torch.manual_seed(0)
    model = ex4.build(variant, 65, SMALL)
    base = sum(p.numel() for p in ex4.build('baseline', 65, SMALL).parameters())
    n = sum(p.numel() for p in model.parameters())
    expected = base - 65 * 32 * ('tie' in variant) - 16 * 32 * ('rope' in variant)  # no lm_head, no position table
    assert n == expected if 'swiglu' not in variant else abs(n - expected) < 0.01 * base  # swiglu: about the same
    x = torch.randint(65, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(65, (2, 6))  # change the last six tokens only
    assert torch.allclose(model(x)[0][:, :10], model(y)[0][:, :10], atol=1e-6)
    assert not torch.allclose(model(x)[0][:, 10:], model(y)[0][:, 10:])
    if 'rope' in variant:  # positions come from the rotation only
        assert isinstance(model.position_embedding_table, ex4.NoPositions)
    chars, splits = gpt.load_data(str(DATA), 16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = gpt.estimate_loss(model, splits, 4, 16, 16, 'cpu')['val']
    for _ in range(40):
        xb, yb = gpt.get_batch(splits['train'], 16, 16, 'cpu')
        loss = model(xb, yb)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gpt.estimate_loss(model, splits, 4, 16, 16, 'cpu')['val'] < first - 0.8  # fell 0.99-1.46 for seeds
    # 0-4, every variant (float32; Intel Xeon, 2026-12-02)


def test_rotation_keeps_lengths_and_makes_attention_depend_on_distance_only():
    q, k = torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16)
    rq = ex4.rotate(q)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    same_q, same_k = q[..., :1, :].expand(1, 1, 8, 16), k[..., :1, :].expand(1, 1, 8, 16)
    scores = (ex4.rotate(same_q) * ex4.rotate(same_k).roll(1, dims=-2)).sum(-1)  # each position against the one before
    torch.testing.assert_close(scores[..., 1:], scores[..., 1:2].expand(1, 1, 7))


def test_ex4_runs_a_tiny_comparison_and_refuses_unknown_changes(capsys, monkeypatch):
    # its step timing, 7 rounds of 30 steps of each variant, cut to 2 rounds of 2 (15 s of the test's 18)
    monkeypatch.setattr(ex4, 'step_times', functools.partial(ex4.step_times, rounds=1, steps=2))
    results = ex4.main(['--variants=rope+tie', '--seeds=1', '--budget_iters=8', '--eval_interval=4',
                        f'--input_file={DATA}', '--target=9'])
    out = capsys.readouterr().out
    assert set(results) == {'baseline', 'rope+tie'} and '| rope+tie |' in out and '| baseline |' in out
    assert all(r[2] is not None for rs in results.values() for r in rs)  # val 9 is reached at once
    with pytest.raises(extras.errors.UserError, match='no change called flash'):
        ex4.main(['--variants=rope+flash', '--seeds=1', f'--input_file={DATA}'])
    with pytest.raises(extras.errors.UserError, match='more than one of swiglu'):
        ex4.main(['--variants=swiglu+relu2', '--seeds=1', f'--input_file={DATA}'])


def test_muon_orthogonalizes_and_trains_through_gpt_train(tmp_path):
    torch.manual_seed(0)
    g = torch.linalg.qr(torch.randn(96, 32))[0] @ torch.diag(torch.logspace(-1, 1, 32))  # singular values 0.1 to 10
    s = torch.linalg.svdvals(extras.muon.orthogonalize(g))
    assert 0.5 < s.min() and s.max() < 1.5  # all near 1 after 5 Newton-Schulz steps
    cfg = cfg_for(DATA, tmp_path / 'ckpt.pt', '--max_iters=30', '--learning_rate=3e-3', '--warmup_iters=0')
    torch.manual_seed(0)
    model = ex4.build('muon', 65, cfg)
    opt = ex4.optimizer_for('muon', model, cfg, 0.02)
    # Muon: the block's 2 heads x (query, key, value), proj, the MLP's 2 matrices; AdamW: embeddings, lm_head,
    # biases, LayerNorms (13)
    assert [len(g['params']) for g in opt.param_groups] == [2 * 3 + 1 + 2, 13]
    before = [p.detach().clone() for p in model.parameters()]
    best = gpt.train(cfg, model=model, optimizer=opt)
    assert best < 3.3 and all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # 3.07-3.11
    # for seeds 0-4 in bfloat16 and float32 (Intel Xeon, 2026-12-02)


# ----------------------------------------------------------------------------- EX4 as a speedrun
SPEEDRUN_TINY = ['--n_layer=1', '--n_embd=32', '--n_head=2', '--block_size=16', '--batch_size=16', '--evals=3',
                 '--max_new_tokens=20', f'--input_file={DATA}']
MODEL_LEVERS = ('relu2', 'vembed', 'rope', 'qknorm', 'zeroinit', 'softcap')


def test_speedrun_ends_within_its_budget_with_the_lectures_estimate(tmp_path):
    start = time.time()
    result = run_script('exercises/ex4_speedrun.py', '--minutes=0.1', *SPEEDRUN_TINY, f'--log={tmp_path}/runs.jsonl',
                        cwd=tmp_path)
    took = time.time() - start
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert took < 6 + 3, took  # the whole command: its imports, training, evaluations, the estimate, the sample
    lines = result.stdout.splitlines()
    assert "the lecture's estimate (200 batches of 64): train" in result.stdout
    assert sum(' min  step ' in line for line in lines) >= 3  # the val loss as it goes
    run = json.loads((tmp_path / 'runs.jsonl').read_text())
    assert run['name'] == speedrun.recipe and run['dropout'] == speedrun.dropout
    assert 0.05 < run['minutes'] <= 0.1 + 0.05 and run['steps'] > 10
    assert f"val {run['val']:.4f} after {run['steps']:,} steps" in result.stdout
    picture = run_script('exercises/ex4_speedrun.py', f'--picture={tmp_path}/runs.jsonl', cwd=tmp_path)
    assert picture.returncode == 0 and (tmp_path / 'runs.png').stat().st_size > 10000, picture.stderr


def test_speedrun_too_short_for_its_final_estimate_says_so(tmp_path):
    result = run_script('exercises/ex4_speedrun.py', '--minutes=0.05', '--n_layer=2', '--max_new_tokens=20',
                        f'--input_file={DATA}', f'--log={tmp_path}/runs.jsonl', cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / 'runs.jsonl').exists()
    assert re.fullmatch(r"error: --minutes=0\.05 leaves no time to train: the final estimate and the "
                        r"sample take about \d+ s at this model's size; give more minutes or a smaller model\n",
                        result.stderr), result.stderr


def test_speedrun_dropout_follows_from_the_budget(tmp_path, capsys):
    log = tmp_path / 'runs.jsonl'  # --picture: the settings are read, and nothing trains
    log.write_text(json.dumps(dict(name='muon', seed=1, budget=1, minutes=1, val=2.0, dropout=0)) + '\n')
    for argv, says in ((['--minutes=30'], True), (['--minutes=10'], False), (['--minutes=30', '--dropout=0'], False)):
        assert speedrun.main([*argv, f'--picture={log}']) is None
        out = capsys.readouterr().out
        assert ('following from the other settings: dropout=0.1 ' in out) == says, (argv, out)
        assert out.endswith(f"drew {tmp_path / 'runs.png'}\n")


def test_speedrun_final_figure_is_gpt_estimate_loss_on_200_fixed_batches(capsys):
    results = speedrun.main(['--minutes=0.05', *SPEEDRUN_TINY, '--recipe=muon', '--seeds=3'])
    r = results['recipe'][0]
    assert not r['model'].training  # sampled without dropout
    _, splits = gpt.load_data(str(DATA), 16)
    with extras.precision.autocast('cpu'):
        again = gpt.estimate_loss(r['model'], splits, 200, 64, 16, 'cpu')
    assert (again['train'], again['val']) == (r['train'], r['val'])  # the same batches, every time
    assert r['val'] < 3.5 and r['history'][0][2] > 4.0  # it learns: 4.17 at the start


@pytest.mark.parametrize('seed', [0, 1])
def test_every_speedrun_lever_together_learns_at_tiny_sizes(seed, capsys):
    every = [n for n in speedrun.LEVERS if n != 'compile']
    results = speedrun.main(['--minutes=0.1', *SPEEDRUN_TINY, f"--recipe={','.join(every)}", f'--seeds={seed}',
                             '--levers=fp32'])
    out = capsys.readouterr().out
    assert set(results) == {'recipe', '-fp32'} and '| -fp32 |' in out
    for r in (results['recipe'][0], results['-fp32'][0]):
        assert r['val'] < 3.2 and r['minutes'] < 0.1 + 0.02, r  # 4.17 at the start


def test_speedrun_compiles_on_its_clock(capsys):
    r = speedrun.main(['--minutes=0.4', *SPEEDRUN_TINY, '--recipe=compile,muon'])['recipe'][0]
    assert r['val'] < 3.2 and r['minutes'] < 0.4 + 0.02, r  # compiling (seconds) is inside the budget


def test_speedrun_model_levers_keep_the_model_causal():
    c = argparse.Namespace(n_layer=2, n_embd=32, n_head=2, block_size=16, dropout=0.0)
    torch.manual_seed(0)
    model = speedrun.SpeedrunGPT(65, c, MODEL_LEVERS)
    assert all((b.sa.proj.weight == 0).all() and (b.out.weight == 0).all() for b in model.blocks)  # zeroinit
    assert not hasattr(model, 'position_embedding_table')  # rope: positions from the rotation only
    for p in model.parameters():  # as after some training: no zero projections left to hide a leak
        p.data += 0.5 * torch.randn_like(p)
    x = torch.randint(65, (2, 16))
    y = x.clone()
    y[:, 10:] = torch.randint(65, (2, 6))
    assert torch.allclose(model(x)[0][:, :10], model(y)[0][:, :10], atol=1e-5)
    assert not torch.allclose(model(x)[0][:, 10:], model(y)[0][:, 10:])
    assert model(x)[0].abs().max() <= 15  # soft-capped logits
    z = torch.randint(1, 65, (2, 16))
    z[0, 5] = 0  # character 0 only here
    before = model(z)[0]
    model.value_embeds[1].weight.data[0] += 1.0  # its value row in the last block: seen from position 5 on
    after = model(z)[0]
    assert torch.equal(before[1], after[1]) and torch.equal(before[0, :5], after[0, :5])
    assert not torch.allclose(before[0, 5:], after[0, 5:])
    opt = speedrun.Muon(model, 3e-3, 0.02)
    assert not {id(p) for p in opt.param_groups[0]['params']} & {id(p) for p in model.value_embeds.parameters()}


def test_rotary_positions_make_scores_depend_on_distance_only():
    c = argparse.Namespace(n_layer=1, n_embd=32, n_head=2, block_size=8, dropout=0.0)
    model = speedrun.SpeedrunGPT(65, c, ('rope',))
    q, k = torch.randn(1, 1, 1, 16).expand(1, 1, 8, 16), torch.randn(1, 1, 1, 16).expand(1, 1, 8, 16)
    rq, rk = speedrun.rotate(q, model.cos, model.sin), speedrun.rotate(k, model.cos, model.sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    scores = (rq * rk.roll(1, dims=-2)).sum(-1)  # each position against the one before
    torch.testing.assert_close(scores[..., 1:], scores[..., 1:2].expand(1, 1, 7))


def test_reshuffled_epochs_make_every_character_a_target_once():
    data = torch.arange(1000)
    epochs = speedrun.Epochs(data, 16, 'cpu')
    x, y = epochs.next(1)
    offset = int(x[0, 0]) % 16
    n = (1000 - 16 - 1 - offset + 15) // 16  # the windows of this epoch
    targets = [y]
    for _ in range(n - 1):
        targets.append(epochs.next(1)[1])
    targets = torch.cat(targets).flatten()
    assert torch.equal(targets.sort().values, torch.arange(offset + 1, offset + 1 + 16 * n))
    assert torch.equal(torch.cat(targets.split(16)[:1]) - 1, x[0])  # y is x shifted by one


def test_speedrun_baseline_is_gpt_py_and_bad_settings_get_one_line(tmp_path):
    c = argparse.Namespace(device='cpu', input_file=str(DATA))
    chars, splits = gpt.load_data(str(DATA), 16)
    b = speedrun.baseline_run(0, c, chars, splits, ['--max_iters=20', '--n_layer=1', '--n_embd=32', '--block_size=16'])
    assert 2.5 < b['val'] < 4.0 and b['minutes'] > 0
    for bad, words in ((['--recipe=muon,flash'], ('--recipe', 'flash', 'rope')),
                       (['--levers=rope,rope'], ('--levers', 'at most once')),
                       (['--minutes=0'], ('--minutes', 'above 0')),
                       ([f'--picture={tmp_path}/none.jsonl'], ('--picture', 'log file'))):
        assert_user_error(call(speedrun.main, *bad, f'--input_file={DATA}'), 2, *words)
    assert list(tmp_path.iterdir()) == []
