"""The video's "swole doge project" after EX2: one GPT that answers a+b, a-b, a*b and a/b.

The video's description: "Once you have this, swole doge project: build a calculator clone in GPT, for all
of +-*/. Not an easy problem. You may need Chain of Thought traces." The question: can `gpt.py`'s model,
unchanged, learn all four operations on numbers of up to 3 digits, and be right on problems it never saw?

The setup:
- operands of 1 to `digits` digits, the operation drawn from --ops; a pair (a, b) held out by the addition
  exercise's rule is never trained on, in any operation (the 100 one-digit pairs, the tables, always are);
- every row is `aaa?bbb=`, then the work (a chain of thought for -, * and /, as taught at school; `work`
  shows each format), then the answer, units first, then `.`; the loss counts everything after `=`, and
  only the answer is scored (exact match, and per digit);
- division checks each guessed quotient digit and corrects it; in training two guesses in five are made one
  off, so that the checks learn to correct the model's own misses, and `long_dividends` of the divisions
  have a full-length dividend (only there can long division's last step borrow at the tens with a
  difference of 0 or more);
- answers are decoded greedily through `generate` (`extras.sampling.sample_stream`, top_k=1), only for the rows where
  one forward pass finds the likeliest token wrong somewhere (`solve`: the same tokens, faster);
- attention runs in gpt.py's fused kernel (`flash = True`), whose scores stay float32 under bfloat16
  autocast; the lecture's `q @ k.T` rounds them to bfloat16, which cost division its goal for some seeds.

`python exercises/ex2_calculator.py` trains and scores every operation on held-out problems; `--eval` scores
the saved checkpoint again; `--ask=123*456` shows the model's work and answer. Results: docs/results.md."""
import pathlib
import re
import sys

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402
from extras import arithmetic  # noqa: E402
from extras.checkpoints import load_model  # noqa: E402

# settings (each can be changed on the command line: --name=value)
digits = 3             # operands have 1 to this many digits
ops = '+-*/'           # the operations to learn
n_layer = 3            # transformer blocks
n_head = 4             # attention heads per block
n_embd = 128           # embedding dimension
batch_size = 64        # problems per training step
max_iters = 12000      # training steps
learning_rate = 2e-3   # AdamW's peak learning rate
warmup_iters = 100     # steps of linear learning-rate warmup
lr_decay = True        # decay the learning rate linearly to 0 over the last 40% of max_iters, as gpt.py
wrong_guesses = 0.4    # share of division's guesses made one off in training (not learned), for the check to correct
long_dividends = 0.6   # share of division's training problems whose a is redrawn with all `digits` digits (docstring)
eval_interval = 1000   # score 250 held-out problems per operation every this many steps
eval_problems = 10000  # held-out problems per operation scored at the end, and by --eval
seed = 1337            # random seed for the model, the training problems and the held-out draw
device = 'auto'        # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
ckpt_path = 'calculator.pt'  # where the trained model is saved
eval = False           # only score the model at ckpt_path on eval_problems held-out problems per operation
ask = ''               # show the saved model's work and answer for one problem, like --ask=123*456
dtype = 'auto'         # training precision, as gpt.py's --dtype: 'bfloat16', 'float32'; auto: bfloat16 where native
flash = True           # attention in gpt.py's fused kernel, whose scores stay float32 in bfloat16 (see the docstring)

# the vocabulary: digit d is token d (not a setting: its name is upper case)
CHARS = '0123456789+-*/=,rE.'
END = CHARS.index('.')


def numbers(shape, generator, digits, long=False):
    """Random numbers of 1 to `digits` digits: the count uniform, then the number uniform among those of that count.
    long: the first row's numbers (the dividends a of draw's pairs) all get the full `digits`."""
    count = torch.randint(1, digits + 1, shape, generator=generator)
    if long:
        count[0] = digits
    low = torch.where(count == 1, 0, 10 ** (count - 1))
    return low + (torch.rand(shape, generator=generator, dtype=torch.float64) * (10 ** count - low)).long()


def held_out(a, b, digits):
    """The addition exercise's rule, except that above 1 digit the one-digit pairs (the tables) always train: each
    would be 2.2% of the held-out problems at 3 digits, and one never trained (0/0) can decide a goal."""
    return arithmetic.held_out(a, b) & ((a > 9) | (b > 9) | (digits == 1))


def draw(n, digits, generator, testing=False, long=False):
    """n problems (a, b) from the training part, or from the held-out part if testing; long: every a has digits
    digits."""
    return arithmetic.draw(n, digits, generator, testing, numbers=lambda shape, g: numbers(shape, g, digits, long),
                         rule=lambda x, y: held_out(x, y, digits))


def units_first(x, width):
    """The digits of x (n,) units first: (n, width) tokens."""
    return x[:, None] // 10 ** torch.arange(width) % 10


def token(name, n):
    return torch.full((n, 1), CHARS.index(name))


def sign(x):
    """`-` where x is below 0 (the subtraction, written units first, borrowed past its top digit), else `+`."""
    return torch.where(x < 0, CHARS.index('-'), CHARS.index('+'))[:, None]


# The rows, every number units first (3 digits):
#   +  the sum, digits+1 of them:                                 123+045=8610.  (168)
#   -  a-b as taught at school, borrowing as addition carries (below 0 it rolls back like a counter, 1000-78),
#      its mark (`-`: it borrowed past its top digit, the sign), then |a-b|:      045-123=229-870.  (-78)
#   *  a times each digit of b, and after each but the first the sum so far; the last sum is the product:
#                                                                 012*034=8400,6300,80400,0000,804000.  (408)
#   /  `E` if b is 0; else for each digit of a: the part brought down X, a guess g, g*b, X-g*b and its mark,
#      then the check (b given back if X-g*b is below 0, else one more b taken) and its mark: `-+` g was one
#      too many, `++` one too few, `+-` right; then the quotient `r` the remainder:
#        123/007=1000000001000+4999-,2100170005000+8999-,3500794004000+7999-,710r400.  (123 = 17*7 + 4)
def work(op, a, b, digits, nudge=None):
    """The tokens after `=` for problems a op b, answer included, then `.`: (n, length) for this op and digits.
    nudge (n, digits) of -1, 0 or 1, for training: long division's guesses made that far off (kept within 0..9)."""
    n = len(a)
    if op == '+':
        return torch.cat([units_first(a + b, digits + 1), token('.', n)], 1)
    if op == '-':  # a-b units first with its borrows, its mark (the sign), then |a-b|
        return torch.cat([units_first((a - b) % 10 ** digits, digits), sign(a - b), units_first((a - b).abs(), digits),
                          token('.', n)], 1)
    if op == '*':  # a times each digit of b (units first), each added to the sum so far: the last sum is a*b
        steps, total = [], torch.zeros_like(a)
        for j in range(digits):
            part = a * (b // 10 ** j % 10)
            total = total + part * 10 ** j
            steps += [units_first(part, digits + 1), token(',', n)]
            if j:  # from the second partial on, the sum so far (at 1 digit the one partial is the product)
                steps += [units_first(total, digits + 1 + j), token(',', n)]
        return torch.cat(steps[:-1] + [token('.', n)], 1)  # the last `,` becomes the end
    steps, rest, safe, width = [], torch.zeros_like(a), b.clamp(min=1), digits + 1  # '/': long division
    for s, i in enumerate(range(digits - 1, -1, -1)):  # a's digits from the left
        x = rest * 10 + a // 10 ** i % 10  # the remainder so far, with a's next digit brought down
        q = x // safe
        guess = q if nudge is None else (q + nudge[:, s]).clamp(0, 9)
        below = x - guess * safe  # x less guess*b: under 0 if the guess was too big
        again = torch.where(below < 0, below + safe, below - safe)  # one b fewer taken if it was, else one more
        steps += [units_first(x, width), guess[:, None], units_first(guess * safe, width),
                  units_first(below % 10 ** width, width), sign(below), units_first(again % 10 ** width, width),
                  sign(again), token(',', n)]
        rest = x - q * safe
    rows = torch.cat(steps + [units_first(a // safe, digits), token('r', n), units_first(a % safe, digits),
                              token('.', n)], 1)
    zero = torch.cat([token('E', n), token('.', n)], 1)  # division by zero: the answer E, then the end
    rows[b == 0] = torch.cat([zero, torch.full((n, rows.shape[1] - 2), END)], 1)[b == 0]
    return rows


def prompt(op, a, b, digits):
    """Tokens `aaa?bbb=`: (n, 2 * digits + 2)."""
    big = 10 ** torch.arange(digits - 1, -1, -1)
    n = len(a)
    return torch.cat([a[:, None] // big % 10, token(op, n), b[:, None] // big % 10, token('=', n)], 1)


def length(op, digits):
    """The number of tokens after `=` in every row of op (division by zero: `E.`, padded with `.`)."""
    return work(op, torch.tensor([1]), torch.tensor([1]), digits).shape[1]


def answer_span(op, digits):
    """Where the answer sits among the tokens after `=`: the answer is what follows the work, `.` included."""
    return {'+': slice(0, digits + 2), '-': slice(digits, None), '*': slice(-(2 * digits + 1), None),
            '/': slice(-(2 * digits + 2), None)}[op]


def guess_columns(digits):
    """Where long division's guesses sit among the tokens after `=`: one per step of 4 * (digits + 1) + 4 tokens."""
    return torch.arange(digits) * (4 * digits + 8) + digits + 1


def block_size(cfg):
    return 2 * cfg.digits + 1 + max(length(op, cfg.digits) for op in cfg.ops)  # the longest row less its last token


def get_batch(n, cfg, generator, device, testing=False):
    """Inputs x and targets y (x shifted by one) for n problems of random operations from cfg.ops; targets of the
    prompt (the next token is still a or b) and of the padding after `.` are -1, so only the work is learned."""
    a, b = draw(n, cfg.digits, generator, testing)
    which = torch.randint(len(cfg.ops), (n,), generator=generator)
    rows = torch.full((n, block_size(cfg) + 1), END)
    mask = torch.zeros_like(rows, dtype=torch.bool)
    p = 2 * cfg.digits + 2
    for k, op in enumerate(cfg.ops):
        i = (which == k).nonzero()[:, 0]
        if op == '/' and not testing:  # more dividends of full length: see long_dividends
            long = i[torch.rand(len(i), generator=generator) < cfg.long_dividends]
            a[long], b[long] = draw(len(long), cfg.digits, generator, long=True)
        off = torch.rand(len(i), cfg.digits, generator=generator) < (cfg.wrong_guesses if op == '/' else 0)
        nudge = off * (torch.randint(2, off.shape, generator=generator) * 2 - 1)  # one off, up or down
        w = work(op, a[i], b[i], cfg.digits, nudge)
        rows[i, :p + w.shape[1]] = torch.cat([prompt(op, a[i], b[i], cfg.digits), w], 1)
        first_end = (w == END).long().argmax(1)  # the first `.`: what comes after it is padding
        mask[i, :p + w.shape[1]] = torch.arange(p + w.shape[1]) <= p + first_end[:, None]
        # a wrong guess is no target (the model should not learn to write wrong digits): only the check after it,
        # and its correction, are learned
        if op == '/':
            mask[i[:, None], p + guess_columns(cfg.digits)] &= ~off
    x, y = rows[:, :-1], rows[:, 1:].clone()
    y[~mask[:, 1:]] = -1
    y[:, :p - 1] = -1  # targets up to `=`: the prompt
    return x.to(device), y.to(device)


def parts(x, y, cfg):
    """The batch in parts of rows of similar length, each cut to its longest row: division's, multiplication's, and
    the others' (+ and -: 13 and 16 tokens at 3 digits, against 36 and 76), so a step does not pay for the short rows'
    padding; fit averages the loss over every part's targets, as for one batch."""
    op, out = x[:, cfg.digits], []
    for group in ('/', '*', '+-'):
        group = ''.join(o for o in group if o in cfg.ops)
        rows = torch.isin(op, torch.tensor([CHARS.index(o) for o in group], dtype=op.dtype, device=op.device))
        if group and rows.any():
            cut = 2 * cfg.digits + 1 + max(length(o, cfg.digits) for o in group)
            out.append((x[rows, :cut], y[rows, :cut]))
    return out


def up_to_end(rows):
    """Where rows (n, length) of tokens after `=` are up to and including their first `.`: what is scored."""
    return torch.arange(rows.shape[1]) <= (rows == END).long().argmax(1)[:, None]


@torch.no_grad()
def solve(model, op, a, b, digits, device, chunk=2000):
    """The model's greedy tokens after `=` for a op b: (n, length), as decoding each row token by token writes
    them up to the first `.` (all that is scored). A shortcut first: one forward pass over the rows written out
    right. Where the model's likeliest token is the right one at every position up to the first `.`, greedy
    decoding would write exactly that row (each token it writes is the one the pass checked, after the same tokens),
    so only the other rows are decoded. A trained model gets nearly every row right: 10,000 problems take seconds."""
    was_training = model.training
    model.eval()
    rows, true = prompt(op, a, b, digits), work(op, a, b, digits)
    full = torch.cat([rows, true], 1).to(device)
    likeliest = torch.cat([model(full[i:i + chunk, :-1])[0][:, rows.shape[1] - 1:].argmax(-1).cpu()
                           for i in range(0, len(rows), chunk)])
    got, redo = true.clone(), ((likeliest != true) & up_to_end(true)).any(1).nonzero()[:, 0]
    for i in range(0, len(redo), chunk):  # the rows it got wrong somewhere: decoded, as sample_stream writes them
        part = rows[redo[i:i + chunk]].to(device)
        tokens = extras.sampling.sample_stream(model, part, true.shape[1], top_k=1)
        got[redo[i:i + chunk]] = torch.stack(list(tokens), 1).cpu()
    model.train(was_training)
    return got


def score(model, op, a, b, digits, device):
    """Whether each row's answer was exactly right, accuracy per answer token, and whether each whole row (work
    too) was right."""
    got, true = solve(model, op, a, b, digits, device), work(op, a, b, digits)
    span = answer_span(op, digits)
    right = got[:, span] == true[:, span]
    if op == '/':  # division by zero: the answer is `E.`, the first two tokens
        zero = (b == 0).nonzero()[:, 0]
        right[zero] = (got[zero, :2] == true[zero, :2]).all(1, keepdim=True)
    return right.all(1), right.float().mean(0).tolist(), ((got == true) | ~up_to_end(true)).all(1)


def report(model, cfg, seed):
    """Score eval_problems held-out problems per operation, drawn with seed, and print the table. Small operands
    are drawn often (a 1-digit operand is a third of the draws), so a distinct problem can count tens of times: the
    table also counts distinct problems."""
    print("| operation | held-out problems | exact match (answer) | distinct problems right | work and answer all "
          "right | per answer token |")
    print("| --- | --- | --- | --- | --- | --- |")
    result = {}
    for k, op in enumerate(cfg.ops):
        a, b = draw(cfg.eval_problems, cfg.digits, torch.Generator().manual_seed(seed + 1000 * k), testing=True)
        exact, per_token, whole = score(model, op, a, b, cfg.digits, cfg.device)
        result[op] = exact.float().mean().item()
        pairs = a * 10 ** cfg.digits + b
        distinct, wrong = pairs.unique().numel(), pairs[~exact].unique().numel()
        print(f"| {op} | {cfg.eval_problems:,} (seed {seed}) | {result[op]:.2%} | {distinct - wrong:,} of {distinct:,} "
              f"| {whole.float().mean().item():.2%} | {' '.join(f'{p:.1%}' for p in per_token)} |", flush=True)
    return result


def read(op, tokens, digits):
    """The model's answer, written as a person would, from its tokens after `=`."""
    text = ''.join(CHARS[t] for t in tokens)
    ans = text[answer_span(op, digits)]
    if op == '/' and text.startswith('E'):
        return 'division by zero'
    if op == '-':
        return ('-' if ans[0] == '-' else '') + str(int(ans[1:-1][::-1]))
    if op == '/':
        q, r = ans[:-1].split('r')
        return f"{int(q[::-1])} remainder {int(r[::-1])}"
    return str(int(ans[:-1][::-1]))


def show_work(model, cfg, question):
    """Print the model's work and answer for one problem like 123*456."""
    found = re.fullmatch(r'\s*(\d+)\s*([-+*/])\s*(\d+)\s*', question)
    if not found or max(len(found[1]), len(found[3])) > cfg.digits or found[2] not in cfg.ops:
        raise extras.errors.UserError(f"--ask={question!r} is not a problem this model knows: write it like 123*456, "
                                      f"with numbers of up to {cfg.digits} digits and one of {' '.join(cfg.ops)}")
    a, op, b = torch.tensor([int(found[1])]), found[2], torch.tensor([int(found[3])])
    tokens = solve(model, op, a, b, cfg.digits, cfg.device)[0].tolist()
    line = ''.join(CHARS[t] for t in prompt(op, a, b, cfg.digits)[0].tolist() + tokens)
    print(f"the model writes: {line[:line.index('.') + 1] if '.' in line else line}")
    try:
        print(f"its answer: {found[1]} {op} {found[3]} = {read(op, tokens, cfg.digits)}")
    except ValueError:
        print("its answer: unreadable (the model did not write an answer in the right form)")


def build(cfg):
    return gpt.GPTLanguageModel(len(CHARS), cfg.n_embd, cfg.n_head, cfg.n_layer, block_size(cfg), 0.0, cfg.flash)


def load(path, device):
    """The calculator saved at path and its settings, or a one-line error (older checkpoints: no flash)."""
    return load_model(path, device, CHARS, build, 'calculator', 'ex2_calculator.py', {'flash': False})


def main(argv=None):
    """Train and score every operation on held-out problems; --eval scores the saved model; --ask asks it one."""
    p, cfg = script_config(__file__, globals(), argv, __doc__, at_least_1=(
        'digits', 'n_layer', 'n_head', 'n_embd', 'batch_size', 'max_iters', 'eval_interval', 'eval_problems'))
    if cfg.digits > 6:
        p.error(f"--digits must be 6 or fewer, not {cfg.digits}: products must fit the held-out rule's integers")
    if not cfg.ops or set(cfg.ops) - set('+-*/') or len(set(cfg.ops)) < len(cfg.ops):
        p.error(f"--ops must name each of + - * / at most once, like --ops=+-*/ or --ops=+-, not {cfg.ops!r}")
    if not 0 <= cfg.long_dividends <= 1:
        p.error(f"--long_dividends must be a share from 0 to 1, like 0.6, not {cfg.long_dividends}")
    if not 0 <= cfg.wrong_guesses < 1:
        p.error(f"--wrong_guesses must be a share from 0 up to (not including) 1, like 0.4, not {cfg.wrong_guesses}")
    if cfg.eval or cfg.ask:
        model, saved = load(cfg.ckpt_path, cfg.device)
        saved.device, saved.eval_problems = cfg.device, cfg.eval_problems
        return show_work(model, saved, cfg.ask) if cfg.ask else report(model, saved, cfg.seed)
    torch.manual_seed(cfg.seed)
    cfg.block_size = block_size(cfg)
    model = build(cfg).to(cfg.device)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; operations {' '.join(cfg.ops)} on numbers "
          f"of up to {cfg.digits} digits; rows of up to {cfg.block_size + 1} tokens")
    g, g_val = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)

    def look():  # a quick look: exact match on 250 held-out problems per operation
        right = {op: score(model, op, *draw(250, cfg.digits, g_val, True), cfg.digits, cfg.device)[0] for op in cfg.ops}
        return ' '.join(f"{op} {r.float().mean():.1%}" for op, r in right.items())
    arithmetic.fit(model, cfg, lambda: parts(*get_batch(cfg.batch_size, cfg, g, cfg.device), cfg), look,
                 extras.schedule.get_lr)
    extras.checkpoints.save(cfg.ckpt_path, model, CHARS, cfg, cfg.max_iters, 0.0)
    print(f"saved to {cfg.ckpt_path}")
    return report(model, cfg, cfg.seed)


if __name__ == '__main__':
    extras.errors.run(main)
