"""exercises/assistant.py at tiny sizes: the judge, the response-only mask, the KL, the reward model, an RL step."""
import argparse
import re

import pytest
import torch

import extras
import gpt
from conftest import assert_user_error, call

import assistant



@pytest.fixture(scope='module')
def text(data_path):
    return data_path.read_text(encoding='utf-8')


@pytest.fixture(scope='module')
def vocab(text):
    chars = sorted(set(text))
    encode, decode = gpt.tokenizer(chars)
    return chars, encode, decode, encode('\n')[0]


def tiny(chars, seed=0, block_size=64):
    torch.manual_seed(seed)
    return gpt.GPTLanguageModel(len(chars), 32, 2, 1, block_size, 0.0)


def settings(**more):
    return argparse.Namespace(**{**dict(group=4, kl_coef=0.0, device='cpu', dtype='float32', seed=0,
                                        batch_size=16, rm_iters=60, rm_lr=3e-3, rl_temperature=1.0), **more})


def test_the_judge_wants_a_line_with_the_letter_and_the_mark():
    assert assistant.judge('T?', 'To be, or not to be?\n')
    assert assistant.judge('T?', 'To be, or not to be?\nand more after the line')  # the first line is the response
    assert not assistant.judge('T?', 'To be, or not to be?')       # no newline: not a finished line
    assert not assistant.judge('T?', 'To be, or not to be.\n')     # the wrong mark
    assert not assistant.judge('T?', 'to be, or not to be?\n')     # the capital letter it asks for
    assert not assistant.judge('T?', 'To be?\n')                   # fewer than 3 words
    assert not assistant.judge('T?', ' To be, or not to be?\n')
    assert [assistant.met('T?', r) for r in ('To be or not?\n', 'To be or not.\n', 'to be or not.\n', 'x')] == \
        [3, 2, 1, 0]


def test_tasks_come_from_the_train_split_and_held_out_ones_never_train(text):
    train, test = assistant.tasks(text)
    assert len(train) > 80 and 5 <= len(test) <= 20 and not set(train) & set(test)
    assert all(assistant.held_out(t) for t in test) and not any(assistant.held_out(t) for t in train)
    val = text[int(0.9 * len(text)):]
    for t, lines in {**train, **test}.items():
        assert len(lines) >= assistant.MIN_LINES
        assert all(assistant.judge(t, line + '\n') for line in lines)  # every demonstration passes the judge
    assert not {line for ls in train.values() for line in ls} <= set(val.split('\n'))
    assert '$' not in text.replace('$', '', 1) and '\n$' not in text  # the markers are new to the model


def test_demonstrations_count_the_response_only(text, vocab):
    chars, encode, decode, _ = vocab
    train, _ = assistant.tasks(text)
    x, y = assistant.demonstrations(train, 8, encode, 64, torch.Generator().manual_seed(0))
    for xr, yr in zip(x.tolist(), y.tolist()):
        task = decode(xr[1:3])
        end = next(i for i in range(5, 64) if xr[i] == encode('\n')[0]) + 1  # past the response's newline
        response = decode(xr[5:end])
        assert decode(xr[:5]) == assistant.prompt(task) and assistant.judge(task, response)
        assert yr[:4] == [-1] * 4 and yr[end - 1:] == [-1] * (64 - end + 1)  # the prompt and the padding: no target
        assert yr[4:end - 1] == xr[5:end]  # each response character, predicted from the one before


def test_the_batched_sampler_answers_each_prompt_as_alone_and_stops_at_the_newline(vocab):
    chars, encode, decode, newline = vocab
    model = tiny(chars)
    prompts = ['$T?$\n', '$A.$\n', '$W!$\nWhy']
    torch.manual_seed(3)
    idx, starts, ends = assistant.answer(model, prompts, encode, newline)
    assert starts.tolist() == [5, 5, 8] and (ends <= 64).all()
    full, _ = model(idx[:, :int(ends.max())])
    for b, p in enumerate(prompts):  # each row's last logits from its own prefix only, as if sampled alone
        row = idx[b:b + 1, :int(ends[b])]
        logits, _ = model(row)
        assert torch.allclose(logits[0, -1], full[b, int(ends[b]) - 1], atol=1e-5)
        assert decode(row[0, :len(p)].tolist()) == p
        said = decode(row[0, len(p):].tolist())
        assert '\n' not in said[:-1] and (said.endswith('\n') or ends[b] - starts[b] == assistant.MAX_NEW
                                           or ends[b] == 64)


def test_the_kl_is_zero_between_a_model_and_itself_and_positive_otherwise(vocab):
    chars, encode, _, newline = vocab
    a, b = tiny(chars, 0), tiny(chars, 1)
    idx, starts, ends = assistant.answer(a, ['$T?$\n'] * 4, encode, newline)
    mask = assistant.response_mask(starts, ends, int(ends.max()))
    la, lb = assistant.log_probs(a, idx, ends), assistant.log_probs(b, idx, ends)
    assert assistant.kl(la, la, mask).abs().max() < 1e-6
    assert (assistant.kl(la, lb, mask) > 0).all()
    # the mask: from the prompt's last character (it predicts the first response character) to before the end
    assert mask[0].nonzero()[:, 0].tolist() == list(range(4, int(ends[0]) - 1))


def test_the_reward_model_learns_a_toy_preference(vocab):
    chars, encode, _, newline = vocab
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(128):  # a chosen line ends with '!', a rejected one with '.', otherwise the same letters
        words = ''.join(chars[13 + j] for j in torch.randint(26, (12,), generator=g).tolist())
        rows += [encode(f'$T!$\nT{words}!\n'), encode(f'$T!$\nT{words}.\n')]
    idx = torch.tensor(rows)
    ends = torch.full((len(rows),), idx.size(1))
    pairs = torch.arange(len(rows)).view(-1, 2)
    train, test = pairs[:96], pairs[96:]
    model = assistant.reward_model_from(tiny(chars))
    assert assistant.pair_accuracy(model, (idx, ends), test) == 0  # a zero head: no preference (ties)
    model = assistant.train_reward_model(model, (idx, ends), train, settings())
    assert assistant.pair_accuracy(model, (idx, ends), test) > 0.9  # 100% for model seeds 0-4, float32 and
    # bfloat16 (Intel Xeon, 2026-12-02)


def test_the_reward_is_read_at_the_responses_first_and_last_characters(vocab):
    class Position(torch.nn.Module):  # outputs 2 ** position, so the sum says which positions were read
        def forward(self, idx):
            return (2.0 ** torch.arange(idx.size(1)))[None, :, None].expand(*idx.shape, 1), None

    idx = torch.tensor([vocab[1]('$T?$\nTo be?\n')] * 2)
    r = assistant.rewards(Position(), idx, torch.tensor([11, 8]))
    assert r.tolist() == [2 ** 5 + 2 ** 10, 2 ** 5 + 2 ** 7]  # the first response character is at 5


def test_the_reward_models_pairs_borrow_answers_to_prompts_for_another_letter_and_another_mark(vocab, monkeypatch):
    chars, encode, decode, newline = vocab
    said = {'T?': ['To be or not?\n', 'To be or not.\n'], 'A?': ['Ay, to be sure?\n', 'A'],
            'B!': ['Be gone, I say!\n', 'Be.\n'], 'T!': ['To arms, to arms!\n', 'To']}

    def answer(model, prompts, encode, newline):  # the SFT model's answers, made by hand
        rows = [p + said[p[1:3]][i % 2] for i, p in enumerate(prompts)]
        idx = torch.tensor([encode(r.ljust(24)) for r in rows])
        return idx, torch.full((len(rows),), 5), torch.tensor([len(r) for r in rows])

    monkeypatch.setattr(assistant, 'answer', answer)
    (idx, ends), pairs, rate = assistant.preference_pairs(None, ['T?', 'A?', 'B!', 'T!'], encode, decode, newline,
                                                          settings(group=2))
    shown = [decode(idx[b, :int(ends[b])].tolist()) for b in range(len(idx))]
    assert shown[8:] == [  # rows 0-7 are the model's own answers, two per prompt
        '$T?$\nAy, to be sure?\n', '$T?$\nA',            # under T?: A?'s (the same mark, another letter)
        '$T?$\nTo arms, to arms!\n', '$T?$\nTo',          # and T!'s (the same letter, another mark)
        '$A?$\nTo be or not?\n', '$A?$\nTo be or not.\n',  # under A?: T?'s; no prompt for A and another mark
        '$B!$\nTo arms, to arms!\n', '$B!$\nTo',          # under B!: T!'s
        '$T!$\nBe gone, I say!\n', '$T!$\nBe.\n',        # under T!: B!'s, then T?'s (wrapping round)
        '$T!$\nTo be or not?\n', '$T!$\nTo be or not.\n']
    # the judge's ranks (requirements met): under T? 3, 2 (own), 2, 0, 2, 1 (borrowed); under A? 3, 1, 2, 1;
    # under B! 3, 1, 2, 0; under T! 3, 1, 2, 0, 2, 2
    groups = [([0, 1, 8, 9, 10, 11], [3, 2, 2, 0, 2, 1]), ([2, 3, 12, 13], [3, 1, 2, 1]),
              ([4, 5, 14, 15], [3, 1, 2, 0]), ([6, 7, 16, 17, 18, 19], [3, 1, 2, 0, 2, 2])]
    expected = [(a, b) for rows, ranks in groups
                for a, ra in zip(rows, ranks) for b, rb in zip(rows, ranks) if ra > rb]
    assert sorted(map(tuple, pairs.tolist())) == sorted(expected)
    assert rate == 4 / 8  # of the model's own answers, not the borrowed ones
    (idx, _), _, _ = assistant.preference_pairs(None, ['T?', 'A?'], encode, decode, newline, settings(group=2),
                                                borrow=False)
    assert len(idx) == 4


def test_the_checks_swap_the_prompts_letter_and_its_mark(text, vocab):
    class LetterOnly(torch.nn.Module):  # rewards a response whose first letter is the prompt's, nothing else
        def forward(self, idx):
            return (idx[:, 5] == idx[:, 1]).float()[:, None, None].expand(*idx.shape, 1), None

    test = assistant.tasks(text)[1]
    letter, mark = assistant.checks(LetterOnly(), test, vocab[1], settings())
    assert (letter, mark) == (1.0, 0.0)  # every line beats itself under another letter, never under another mark


def test_one_rl_step_raises_a_toy_reward(vocab):
    chars, encode, _, newline = vocab
    e = encode('e')[0]
    count = lambda idx, ends: torch.stack([(idx[b, 5:int(ends[b])] == e).float().sum()  # noqa: E731
                                           for b in range(len(ends))])
    policy, reference = tiny(chars, block_size=16), tiny(chars, block_size=16)
    reference.load_state_dict(policy.state_dict())

    def mean_reward():
        torch.manual_seed(7)
        idx, _, ends = assistant.answer(policy, ['$T?$\n'] * 512, encode, newline)
        return count(idx, ends).mean().item()

    before = mean_reward()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    torch.manual_seed(0)
    _, divergence = assistant.rl_step(policy, reference, count, ['T?'] * 64, optimizer, encode, newline,
                                      settings(kl_coef=0.1))
    assert divergence < 1e-6  # sampled before the step: the policy was still the reference
    assert mean_reward() > 1.2 * before, before  # 1.33x to 1.93x for the model's seeds 0-5 (at 0.15-0.17)


def test_the_whole_pipeline_runs_at_tiny_sizes_and_eval_scores_it_again(tmp_path, data_path, vocab, capsys):
    chars = vocab[0]
    base = tmp_path / 'ckpt.pt'
    cfg = argparse.Namespace(n_embd=32, n_head=2, n_layer=1, block_size=64)
    extras.checkpoints.save(base, tiny(chars), chars, cfg, 0, 4.0)
    args = [f'--base={base}', f'--input_file={data_path}', f'--ckpt_path={tmp_path / "a.pt"}', '--device=cpu',
            '--dtype=float32', '--sft_iters=40', '--sft_lr=1e-2', '--batch_size=8', '--rm_prompts=32',
            '--rm_iters=3', '--rl_iters=2', '--eval_interval=1', '--eval_prompts=8']
    result = assistant.main(args)
    out = capsys.readouterr().out
    assert list(result['rows']) == ['base', 'SFT', 'RL'] and [h[0] for h in result['history']] == [0, 1, 2]
    assert result['rows']['SFT']['kl'] == 0 and '| RL |' in out and (tmp_path / 'a.pt').is_file()
    assert re.search(r'another letter \d+\.\d%.*another mark \d+\.\d%', out)  # what the reward model checks
    again = assistant.main(args + ['--eval', '--seed=2'])['rows']
    assert list(again) == ['base', 'SFT', 'RL'] and again['SFT']['kl'] == 0
    assert all(abs(again[k]['val'] - result['rows'][k]['val']) < 1e-5 for k in again)  # the same weights


@pytest.mark.parametrize('args, message', [
    (['--group=1'], "--group must be 2 or more (pairs and baselines need two samples of a prompt), not 1"),
    (['--rl_lr=0'], "--rl_lr must be a number above 0, like 1e-3, not 0.0"),
    (['--kl_coef=-1'], "--kl_coef must be 0 or more, not -1.0"),
    (['--rl_temperature=0'], "--rl_temperature must be a number above 0, like 2.0, not 0.0"),
    (['--dtype=float16'], "--dtype must be auto, bfloat16 or float32, not 'float16'"),
])
def test_bad_settings_give_one_line(args, message):
    result = call(assistant.main, *args)
    assert result.returncode == 2 and result.stderr == f"assistant.py: error: {message}; --help lists every setting\n"


def test_without_a_base_model_or_a_pipeline_one_line_says_what_to_run(tmp_path, data_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'input.txt').write_bytes(data_path.read_bytes())
    result = call(assistant.main, f'--base={tmp_path / "none.pt"}')
    assert result.returncode == 1
    assert result.stderr == f"error: no base model at {tmp_path / 'none.pt'}: train one first with `python gpt.py`, " \
                            "or set --base\n"
    assert_user_error(call(assistant.main, '--eval', f'--ckpt_path={tmp_path / "a.pt"}'),
                      1, f"no pipeline at {tmp_path / 'a.pt'}: run `python exercises/assistant.py` first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ['input.txt']  # nothing written, not even the text's cache
    (tmp_path / 'other.pt').write_bytes(b'not a checkpoint')
    assert_user_error(call(assistant.main, '--eval', '--ckpt_path=other.pt'), 1,
                      "other.pt holds no pipeline of this script (UnpicklingError): run "
                      "`python exercises/assistant.py` again")
