"""EX2's calculator at tiny sizes: every operation's rows and work, the masking, the held-out rule, a tiny model."""
import argparse
import re

import pytest
import torch

import extras
from conftest import assert_user_error, call

import ex2_calculator as calc
from extras.config import script_config

ALL = argparse.Namespace(digits=3, ops='+-*/', wrong_guesses=0.2, long_dividends=0.6)


def text(tokens):
    return ''.join('_' if t < 0 else calc.CHARS[t] for t in tokens)


def row(op, a, b, digits=3, nudge=None):
    a, b = torch.tensor([a]), torch.tensor([b])
    return text(calc.prompt(op, a, b, digits)[0].tolist() + calc.work(op, a, b, digits, nudge)[0].tolist())


def test_each_operation_writes_its_work_and_answer_units_first():
    assert row('+', 123, 45) == '123+045=8610.'
    # a-b units first, borrowing as addition carries (45-123 rolls back to 1000-78 = 922); the sign; |a-b|
    assert row('-', 45, 123) == '045-123=229-870.' and row('-', 123, 45) == '123-045=870+870.'
    assert row('-', 7, 7) == '007-007=000+000.' and row('-', 26, 34) == '026-034=299-800.'
    assert row('-', 7, 8) == '007-008=999-100.' and row('-', 239, 231) == '239-231=800+800.'
    # 12*34: 12*4 = 48, 12*3 = 36, 48 + 360 = 408, 12*0 = 0, 408 + 0 = 408 (the product)
    assert row('*', 12, 34) == '012*034=8400,6300,80400,0000,804000.'
    assert row('*', 99, 99, digits=2) == '99*99=198,198,1089.' and row('*', 7, 8, digits=1) == '7*8=65.'
    # 123/7: bring down 1, guess 0 sevens (0), 1-0 = 1 (+: not too many), 1-7 below 0 (-: not too few); 12, one
    # seven (7), 5 left, 5-7 below 0; 53, seven sevens (49), 4 left, 4-7 below 0; quotient 17, remainder 4
    assert row('/', 123, 7) == '123/007=1000000001000+4999-,2100170005000+8999-,3500794004000+7999-,710r400.'
    # guesses one off (as in training): 1 seven in 1 is too many (1-7 below 0: -, so 7 is given back: 1 +), 0 in
    # 12 too few (12-0-7 = 5 is not below 0: +), 8 in 53 too many (53-56 = -3, -3+7 = 4 +); the remainder is the
    # second number where its mark is +, so the next part brought down and the answer use the right digits
    assert (row('/', 123, 7, nudge=torch.tensor([[1, -1, 1]])) ==
            '123/007=1000170004999-1000+,2100000002100+5000+,3500865007999-4000+,710r400.')
    assert row('/', 5, 0) == '005/000=E.' + '.' * 66  # division by zero: the answer E, the rest padding
    assert row('/', 2, 1, digits=1) == '2/1=2022000+99-,2r0.'


@pytest.mark.parametrize('op', list('+-*/'))
def test_the_answer_read_off_after_the_work_is_the_arithmetic(op):
    g = torch.Generator().manual_seed(0)
    a, b = calc.draw(3000, 3, g)
    if op == '/':
        a, b = torch.cat([a, torch.tensor([0, 999, 5])]), torch.cat([b, torch.tensor([0, 0, 999])])
    work = calc.work(op, a, b, 3)
    assert work.shape[1] == calc.length(op, 3) and (work[:, -1] == calc.END).all()
    for x, y, w in zip(a.tolist(), b.tolist(), work.tolist()):
        want = {'+': str(x + y), '-': str(x - y), '*': str(x * y),
                '/': f'{x // y} remainder {x % y}' if y else 'division by zero'}[op]
        assert calc.read(op, w, 3) == want, (x, y, text(w))
    if op == '*':  # the work: a times each digit of b, units first, each 4 digits, and the sums so far
        for j, at in enumerate([0, 5, 16]):
            assert torch.equal(number(work[:, at:at + 4]), a * (b // 10 ** j % 10))
        assert torch.equal(number(work[:, 10:15]), a * (b % 100))
    if op == '-':  # the work: a-b, or 1000 more where below 0, and the mark that says which
        below = work[:, 3] == calc.CHARS.index('-')
        assert torch.equal(number(work[:, :3]), a - b + 1000 * below) and torch.equal(below, a < b)
    if op == '/':  # the work: each quotient digit times b never exceeds the part brought down, and the rest < b
        nonzero = b > 0
        for i in range(3):
            x, q, qb, below, marks, over = step(work[nonzero], i)
            assert torch.equal(qb, q * b[nonzero]) and (x - qb >= 0).all() and (x - qb < b[nonzero]).all()
            assert torch.equal(below, x - qb) and torch.equal(over, (below - b[nonzero]) % 10000) and marks == {'+-'}


def number(tokens):
    """The number whose digits, units first, are the last dimension of tokens."""
    return (tokens * 10 ** torch.arange(tokens.shape[-1])).sum(-1)


def step(work, i):
    """Long division's step i: the part brought down, the guess, guess*b, the two checks and their marks."""
    s = work[:, 20 * i:20 * i + 20]  # X, guess, guess*b, X - guess*b and its mark, that less b and its mark, ','
    assert (s[:, 19] == calc.CHARS.index(',')).all()
    return (number(s[:, :4]), s[:, 4], number(s[:, 5:9]), number(s[:, 9:13]),
            {calc.CHARS[m] + calc.CHARS[n] for m, n in s[:, [13, 18]].tolist()}, number(s[:, 14:18]))


def test_long_divisions_checks_catch_a_guess_one_off_and_the_answer_stays_right():
    a, b = calc.draw(3000, 3, torch.Generator().manual_seed(3))
    a, b = a[b > 0], b[b > 0]
    nudge = torch.randint(-1, 2, (len(a), 3), generator=torch.Generator().manual_seed(4))
    right, nudged = calc.work('/', a, b, 3), calc.work('/', a, b, 3, nudge)
    assert torch.equal(nudged[:, -8:], right[:, -8:])  # the same quotient and remainder
    for i in range(3):
        x, q, _, _, _, _ = step(right, i)
        x_nudged, guess, _, _, _, _ = step(nudged, i)
        assert torch.equal(x_nudged, x) and torch.equal(guess, (q + nudge[:, i]).clamp(0, 9))
        rest = x - q * b  # what is left after the right digit: written as the check's second number, or first
        for way, marks in ((-1, {'++'}), (0, {'+-'}), (1, {'-+'})):  # too few: X - guess*b - b is not below 0
            sel = guess - q == way
            _, _, _, below, seen, again = step(nudged[sel], i)
            assert sel.any() and seen == marks and torch.equal(again if way else below, rest[sel])


def test_batches_mask_the_prompt_and_the_padding_and_mix_every_operation():
    x, y = calc.get_batch(2000, ALL, torch.Generator().manual_seed(0), 'cpu')
    assert x.shape == y.shape == (2000, calc.block_size(ALL)) == (2000, 75)
    assert (y[:, :7] == -1).all() and (y[:, 7] >= 0).all()  # from `=` on, the work is learned
    kept = y != -1
    assert torch.equal(x[:, 1:][kept[:, :-1]], y[:, :-1][kept[:, :-1]])  # y is x shifted where kept
    ends = (y == calc.END) & kept
    assert (ends.sum(1) == 1).all()  # each row's first `.` is learned, the padding after it is not
    assert (~kept[torch.arange(75) > ends.long().argmax(1)[:, None]]).all()
    rows = [text(r) for r in x.tolist()]
    for op in '+-*/':
        assert 350 < sum(r[3] == op for r in rows) < 650
    is_div, long = x[:, 3] == calc.CHARS.index('/'), x[:, 0] > 0  # a's first digit: a has all 3 digits
    assert 0.65 < long[is_div].float().mean() < 0.82 and 0.28 < long[~is_div].float().mean() < 0.39  # 0.73, 1/3
    zero = [r for r in rows if r[3:7] == '/000']  # division by zero comes up, and is answered E
    assert zero and all(r[8:] == 'E' + '.' * 66 for r in zero)
    d, t = x[is_div & (x[:, 4:7] != 0).any(1)], y[is_div & (x[:, 4:7] != 0).any(1)]  # divisions but by zero
    at = 8 + calc.guess_columns(3)  # where long division's guesses sit in a row, each after its part brought down
    wrong = d[:, at] != number(d[:, at[:, None] + torch.arange(-4, 0)]) // number(d[:, 4:7].flip(1))[:, None]
    assert 0.1 < wrong.float().mean() < 0.2  # a fifth nudged one off, less those that would leave 0..9 (kept right)
    assert (t[:, at - 1][wrong] == -1).all() and (t[:, at - 1][~wrong] >= 0).float().mean() > 0.85  # not learned
    parts = calc.parts(x, y, ALL)  # division's rows, multiplication's, the others: each loses only padding
    is_mul = x[:, 3] == calc.CHARS.index('*')
    assert [len(p[0]) for p in parts] == [is_div.sum(), is_mul.sum(), 2000 - is_div.sum() - is_mul.sum()]
    assert [p[0].shape[1] for p in parts] == [75, 35, 15] and sum((p[1] >= 0).sum() for p in parts) == kept.sum()
    assert torch.equal(parts[2][0], x[~is_div & ~is_mul, :15]) and (y[~is_div & ~is_mul, 15:] == -1).all()
    assert [len(p[0]) for p in calc.parts(x[~is_div], y[~is_div], argparse.Namespace(digits=3, ops='+-*'))] == \
        [is_mul.sum(), 2000 - is_div.sum() - is_mul.sum()]  # without division: two parts
    torch.manual_seed(0)
    model = calc.build(argparse.Namespace(n_embd=16, n_head=2, n_layer=1, flash=True, **vars(ALL)))
    losses = [(model(*p)[1], (p[1] != -1).sum()) for p in parts]  # as fit weighs them: the loss of the whole batch
    assert torch.allclose(sum(part * n for part, n in losses) / sum(n for _, n in losses), model(x, y)[1])


def test_the_held_out_rule_is_the_addition_exercises_but_the_tables_train_and_it_never_leaks_into_training():
    every = torch.arange(1000)
    a, b = every.repeat_interleave(1000), every.repeat(1000)
    tables = (a < 10) & (b < 10)
    rule = extras.arithmetic.held_out  # the addition exercise's rule...
    assert torch.equal(calc.held_out(a, b, 3), rule(a, b) & ~tables)
    assert rule(a, b)[tables].sum() == 5 and not calc.held_out(a, b, 3)[tables].any()  # ...less 5 pairs
    assert torch.equal(calc.held_out(a[tables], b[tables], 1), rule(a[tables], b[tables]))  # 1 digit: kept
    g = torch.Generator().manual_seed(1)
    a, b = calc.draw(20000, 3, g)
    assert not calc.held_out(a, b, 3).any()
    assert ((a == 0) & (b == 0)).any() and ((a == 7) & (b == 8)).any()  # 0?0 and 7?8 are trained now
    counts = torch.bincount(torch.cat([a, b]).clamp(min=1).log10().floor().long(), minlength=3)
    assert (counts.float() / counts.sum() - 1 / 3).abs().max() < 0.02  # 1, 2 and 3 digits, a third each
    a, b = calc.draw(500, 3, g, testing=True)
    assert calc.held_out(a, b, 3).all()
    x, _ = calc.get_batch(5000, ALL, g, 'cpu')  # what training sees: no held-out pair, in any operation
    places = torch.tensor([100, 10, 1])
    assert not calc.held_out((x[:, 0:3] * places).sum(1), (x[:, 4:7] * places).sum(1), 3).any()
    a, b = calc.draw(50000, 3, g, testing=True)
    assert (b == 0).sum() > 100  # held-out divisions by zero exist and are scored too
    assert torch.unique(a * 1000 + b, return_counts=True)[1].max() < 50000 * 0.006  # no problem is 0.6% of them


def test_a_tiny_calculator_learns_one_digit_addition_and_subtraction_and_answers_a_question(tmp_path, capsys,
                                                                                            monkeypatch):
    ckpt = tmp_path / 'calculator.pt'
    result = calc.main(['--digits=1', '--ops=+-', '--n_layer=2', '--n_embd=48', '--n_head=2', '--batch_size=128',
                        '--max_iters=700', '--eval_interval=700', '--eval_problems=200', '--learning_rate=3e-3',
                        '--device=cpu', f'--ckpt_path={ckpt}'])
    out = capsys.readouterr().out
    assert set(result) == {'+', '-'} and '| + | 200 (seed 1337) |' in out and '| - | 200 (seed 1337) |' in out
    for op in '+-':  # 200 draws of the 5 held-out 1-digit pairs (0-0, 0-7, 7-0, 7-8, 8-7): each counted once
        assert re.search(rf'\| \{op} \| 200 \(seed 1337\) \| [\d.]+% \| [0-5] of 5 \|', out), out
    model, cfg = calc.load(str(ckpt), 'cpu')
    for op in '+-':  # every 1-digit problem the model trained on, answered exactly (as it was for seeds 1337,
        # 1-4 in bfloat16 and float32: the lecture's attention on the Intel Xeon, 7-12 s each; the fused
        # kernel, the default since, on the AMD EPYC, 4-6 s each; 2026-12-02; with the borrows, 4.3-5.1 s, 12-03)
        a, b = torch.arange(10).repeat_interleave(10), torch.arange(10).repeat(10)
        seen = ~calc.held_out(a, b, 1)
        exact, _, whole = calc.score(model, op, a[seen], b[seen], 1, 'cpu')
        assert exact.all() and whole.all(), (op, exact)
    decoded = []  # the shortcut in solve: rows right at every token are not decoded, and nothing else changes
    plain_stream = extras.sampling.sample_stream
    monkeypatch.setattr(extras.sampling, 'sample_stream', lambda m, rows, *args, **kw: decoded.append(len(rows)) or
                        plain_stream(m, rows, *args, **kw))
    for op in '+-':
        a, b = torch.arange(10).repeat_interleave(10), torch.arange(10).repeat(10)
        got = calc.solve(model, op, a, b, 1, 'cpu')
        assert sum(decoded) == (got != calc.work(op, a, b, 1)).any(1).sum() <= 5  # at most the 5 held out
        assert torch.equal(got, decode(model, op, a, b, 1)[0])
        decoded.clear()
    calc.main(['--ask=7-9', '--device=cpu', f'--ckpt_path={ckpt}'])
    assert capsys.readouterr().out == 'the model writes: 7-9=8-2.\nits answer: 7 - 9 = -2\n'
    with pytest.raises(extras.errors.UserError, match=r"--ask='7\*9' is not a problem this model knows"):
        calc.main(['--ask=7*9', '--device=cpu', f'--ckpt_path={ckpt}'])


def decode(model, op, a, b, digits):
    """The lecture's way: every row decoded token by token, greedily; and the right rows."""
    model.eval()
    rows = calc.prompt(op, a, b, digits)
    return torch.stack(list(extras.sampling.sample_stream(model, rows, calc.length(op, digits), top_k=1)), 1), \
        calc.work(op, a, b, digits)


def test_solve_writes_what_decoding_writes_up_to_the_end_for_every_operation():
    torch.manual_seed(0)  # an untrained model: rows wrong from their first token, and all decoded
    model = calc.build(argparse.Namespace(n_embd=32, n_head=2, n_layer=1, flash=True, **vars(ALL)))
    a, b = calc.draw(300, 3, torch.Generator().manual_seed(0), testing=True)
    b[:20] = 0  # divisions by zero too
    for op in '+-*/':
        slow, true = decode(model, op, a, b, 3)
        fast = calc.solve(model, op, a, b, 3, 'cpu', chunk=128)
        assert torch.equal(fast, slow), op  # nothing is right here, so the whole row was decoded


@pytest.mark.parametrize('args, words', [
    (['--ops=+x'], ['--ops']),
    (['--ops=++'], ['--ops']),
    (['--digits=7'], ['--digits']),
    (['--learning_rate=0'], ['--learning_rate']),
    (['--wrong_guesses=1'], ['--wrong_guesses must be a share from 0 up to (not including) 1, like 0.4, not 1.0']),
    (['--long_dividends=2'], ['--long_dividends must be a share from 0 to 1, like 0.6, not 2.0']),
    (['--chars=abc'], ['unrecognized arguments: --chars=abc']),  # the vocabulary is not a setting
])
def test_calculator_settings_errors(args, words, capsys):
    with pytest.raises(SystemExit) as exit:
        calc.main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.endswith('--help lists every setting\n')
    assert all(w in err for w in words), err


def test_calculator_without_a_checkpoint_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(call(calc.main, '--eval'), 1, 'no checkpoint', 'calculator.pt')


def test_flash_is_the_default_saved_and_rebuilt_and_older_checkpoints_load_without_it(tmp_path):
    path = str(tmp_path / 'calculator.pt')
    _, cfg = script_config(calc.__file__, vars(calc), ['--digits=1', '--n_layer=1', '--n_embd=16', '--n_head=2'],
                               calc.__doc__)  # no --flash: the fused kernel is the default (docs/results.md)
    model = calc.build(cfg)
    extras.checkpoints.save(path, model, calc.CHARS, cfg, 0, 0.0)
    loaded, saved = calc.load(path, 'cpu')
    assert saved.flash and all(h.flash for b in loaded.blocks for h in b.sa.heads)
    ckpt = torch.load(path, weights_only=True)
    del ckpt['config']['flash']  # a checkpoint from before the setting: the lecture's attention lines
    torch.save(ckpt, path)
    loaded, saved = calc.load(path, 'cpu')
    assert not saved.flash and not any(h.flash for b in loaded.blocks for h in b.sa.heads)
