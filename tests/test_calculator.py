"""EX2's calculator at tiny sizes: every operation's rows and work, the masking, the held-out rule, a tiny model."""
import argparse
import sys

import pytest
import torch

import gpt
from conftest import ROOT, assert_user_error, run_script

sys.path.insert(0, str(ROOT / 'exercises'))
import ex2_addition as ex2  # noqa: E402
import ex2_calculator as calc  # noqa: E402

ALL = argparse.Namespace(digits=3, ops='+-*/')


def text(tokens):
    return ''.join('_' if t < 0 else calc.chars[t] for t in tokens)


def row(op, a, b, digits=3):
    a, b = torch.tensor([a]), torch.tensor([b])
    return text(calc.prompt(op, a, b, digits)[0].tolist() + calc.work(op, a, b, digits)[0].tolist())


def test_each_operation_writes_its_work_and_answer_units_first():
    assert row('+', 123, 45) == '123+045=8610.'
    # a and b compared from the top digit: = while equal, then the first difference's < or >; the sign; |a-b|
    assert row('-', 45, 123) == '045-123=<<<-870.' and row('-', 123, 45) == '123-045=>>>+870.'
    assert row('-', 7, 7) == '007-007====+000.' and row('-', 26, 34) == '026-034==<<-800.'
    assert row('-', 239, 231) == '239-231===>+800.'
    # 12*34: 12*4 = 48, 12*3 = 36, 12*0 = 0, then 408
    assert row('*', 12, 34) == '012*034=8400,6300,0000,804000.'
    # 123/7: bring down 1, 0 sevens; 12, one seven (7); 53, seven sevens (49); quotient 17, remainder 4
    assert row('/', 123, 7) == '123/007=100000000,210017000,350079400,710r400.'
    assert row('/', 5, 0) == '005/000=E.' + '.' * 36  # division by zero: the answer E, the rest padding
    assert row('/', 2, 1, digits=1) == '2/1=20220,2r0.'


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
    if op == '*':  # the work: a times each digit of b, units first, each 4 digits
        for j in range(3):
            part = work[:, 5 * j:5 * j + 4]
            assert torch.equal((part * 10 ** torch.arange(4)).sum(1), a * (b // 10 ** j % 10))
    if op == '-':  # the work: the marks say how a and b compare, looking at their top digits so far
        for i in range(3):
            top_a, top_b = a // 10 ** (2 - i), b // 10 ** (2 - i)
            want = torch.where(top_a < top_b, calc.chars.index('<'), torch.where(top_a > top_b, calc.chars.index('>'),
                                                                                calc.chars.index('=')))
            assert torch.equal(work[:, i], want)
    if op == '/':  # the work: each quotient digit times b never exceeds the part brought down, and the rest < b
        nonzero = b > 0
        for i in range(3):
            step = work[nonzero, 10 * i:10 * i + 9]  # X, q, q*b, then ','
            x, q, qb = (step[:, :4] * 10 ** torch.arange(4)).sum(1), step[:, 4], (step[:, 5:9] * 10 ** torch.arange(4)).sum(1)
            assert torch.equal(qb, q * b[nonzero]) and (x - qb >= 0).all() and (x - qb < b[nonzero]).all()


def test_batches_mask_the_prompt_and_the_padding_and_mix_every_operation():
    x, y = calc.get_batch(2000, ALL, torch.Generator().manual_seed(0), 'cpu')
    assert x.shape == y.shape == (2000, calc.block_size(ALL)) == (2000, 45)
    assert (y[:, :7] == -1).all() and (y[:, 7] >= 0).all()  # from `=` on, the work is learned
    kept = y != -1
    assert torch.equal(x[:, 1:][kept[:, :-1]], y[:, :-1][kept[:, :-1]])  # y is x shifted where kept
    ends = (y == calc.END) & kept
    assert (ends.sum(1) == 1).all()  # each row's first `.` is learned, the padding after it is not
    assert (~kept[torch.arange(45) > ends.long().argmax(1)[:, None]]).all()
    rows = [text(r) for r in x.tolist()]
    for op in '+-*/':
        assert 350 < sum(r[3] == op for r in rows) < 650
    zero = [r for r in rows if r[3:7] == '/000']  # division by zero comes up, and is answered E
    assert zero and all(r[8:] == 'E' + '.' * 36 for r in zero)


def test_the_held_out_rule_is_the_addition_exercises_and_never_leaks_into_training():
    g = torch.Generator().manual_seed(1)
    a, b = calc.draw(20000, 3, g)
    assert not ex2.held_out(a, b).any()
    counts = torch.bincount(torch.cat([a, b]).clamp(min=1).log10().floor().long(), minlength=3)
    assert (counts.float() / counts.sum() - 1 / 3).abs().max() < 0.02  # 1, 2 and 3 digits, a third each
    a, b = calc.draw(500, 3, g, testing=True)
    assert ex2.held_out(a, b).all()
    x, _ = calc.get_batch(5000, ALL, g, 'cpu')  # what training sees: no held-out pair, in any operation
    places = torch.tensor([100, 10, 1])
    assert not ex2.held_out((x[:, 0:3] * places).sum(1), (x[:, 4:7] * places).sum(1)).any()
    held = calc.draw(50000, 3, g, testing=True)
    assert (held[1] == 0).sum() > 100  # held-out divisions by zero exist and are scored too


def test_a_tiny_calculator_learns_one_digit_addition_and_subtraction_and_answers_a_question(tmp_path, capsys):
    ckpt = tmp_path / 'calculator.pt'
    result = calc.main(['--digits=1', '--ops=+-', '--n_layer=2', '--n_embd=48', '--n_head=2', '--batch_size=128',
                        '--max_iters=700', '--eval_interval=700', '--eval_problems=200', '--learning_rate=3e-3',
                        '--device=cpu', f'--ckpt_path={ckpt}'])
    out = capsys.readouterr().out
    assert set(result) == {'+', '-'} and '| + | 200 (seed 1337) |' in out and '| - | 200 (seed 1337) |' in out
    model, cfg = calc.load(str(ckpt), 'cpu')
    for op in '+-':  # every 1-digit problem the model trained on, answered exactly
        a, b = torch.arange(10).repeat_interleave(10), torch.arange(10).repeat(10)
        seen = ~ex2.held_out(a, b)
        exact, _, whole = calc.score(model, op, a[seen], b[seen], 1, 'cpu')
        assert exact == 1.0 and whole.all(), (op, exact)
    calc.main(['--ask=7-9', '--device=cpu', f'--ckpt_path={ckpt}'])
    assert capsys.readouterr().out == 'the model writes: 7-9=<-2.\nits answer: 7 - 9 = -2\n'
    with pytest.raises(gpt.UserError, match=r"--ask='7\*9' is not a problem this model knows"):
        calc.main(['--ask=7*9', '--device=cpu', f'--ckpt_path={ckpt}'])


@pytest.mark.parametrize('args, words', [
    (['--ops=+x'], ['--ops']),
    (['--ops=++'], ['--ops']),
    (['--digits=7'], ['--digits']),
    (['--learning_rate=0'], ['--learning_rate']),
    (['--chars=abc'], ['unrecognized arguments: --chars=abc']),  # the vocabulary is not a setting
])
def test_calculator_settings_errors(args, words, capsys):
    with pytest.raises(SystemExit) as exit:
        calc.main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.splitlines()) == 1 and err.endswith('--help lists every setting\n')
    assert all(w in err for w in words), err


def test_calculator_without_a_checkpoint_says_so_in_one_line(tmp_path):
    assert_user_error(run_script('exercises/ex2_calculator.py', '--eval', cwd=tmp_path), 1, 'no checkpoint',
                      'calculator.pt')
