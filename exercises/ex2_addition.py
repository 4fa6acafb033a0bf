"""Exercise 2 of the video: train the GPT to add two numbers, a+b=c.

The video's description: "train a GPT to do addition of two numbers, i.e. a+b=c. You may find it helpful
to predict the digits of c in reverse order ... You may want to modify the data loader to simply serve
random problems ... You may want to mask out the loss at the input positions of a+b ... using y=-1 in
the targets ... Does your Transformer learn to add?" The setup, as it suggests:
- every problem is `a+b=` (a and b zero-padded to `digits` digits), then c with its digits reversed, units
  first: the order in which a person adds, carry by carry;
- problems are drawn on the fly; a fixed rule (a hash of the pair) sets 5% of them aside, never trained
  on: every accuracy is on that held-out part;
- the loss counts the answer's digits only: the prompt's targets are -1 (`ignore_index=-1`);
- answers are decoded greedily through `generate` (`extras.sampling.sample_stream`, top_k=1);
- --short=0.5 (the default) cuts half of the training operands short: a place where one digit is 0 shows
  the answer position where to look; without it some starts sit at chance on the tens digit;
- above 3 digits the settings in LONG follow from `digits`: position coupling (`PlaceMarks`: each position
  learns the digit place it reads or predicts, Cho et al., 2024), 128 wide, learning rate 2e-3, batch 64,
  --short=0.75, and gpt.py's fused attention, whose scores stay float32 under bfloat16 autocast (the
  lecture's `q @ k.T` rounds them, which kept some 10-digit runs at chance on the units digit).

`python exercises/ex2_addition.py` trains and scores; `--eval` scores the saved checkpoint again on
problems drawn with another `--seed`. Results: docs/results.md."""
import pathlib
import sys

import torch
import torch.nn as nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402
from extras.arithmetic import draw, fit  # noqa: E402
from extras.checkpoints import load_model  # noqa: E402

# settings (each can be changed on the command line: --name=value)
digits = 3             # digits of a and b: problems a+b= with a, b below 10**digits
n_layer = 2            # transformer blocks
n_head = 4             # attention heads per block
n_embd = 64            # embedding dimension
batch_size = 256       # problems per training step
max_iters = 2000       # training steps
learning_rate = 3e-3   # AdamW's peak learning rate
warmup_iters = 100     # steps of linear learning-rate warmup
lr_decay = True        # cosine-decay the learning rate to a tenth of it by max_iters
eval_interval = 500    # score held-out problems every this many steps
eval_problems = 10000  # held-out problems scored at the end, and by --eval
seed = 1337            # random seed for the model, the training problems and the held-out draw
device = 'auto'        # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
ckpt_path = 'addition.pt'  # where the trained model is saved
eval = False           # only score the model at ckpt_path on eval_problems held-out problems
coupling = False       # position coupling: positions marked by the digit place they read or predict, and their carry's
short = 0.5            # share of training operands cut to a random count of digits (held-out ones stay whole)
dtype = 'auto'         # training precision, as gpt.py's --dtype: 'bfloat16', 'float32'; auto: bfloat16 where native
flash = False          # attention in gpt.py's fused kernel, whose scores stay float32 in bfloat16 (on above 3 digits)

# the vocabulary: digit d is token d (not a setting: its name is upper case)
CHARS = '0123456789+='
# above 3 digits, these take the place of the values above unless given on the command line (docs/results.md);
# flash: why, in the docstring's --flash above
LONG = dict(coupling=True, n_embd=128, learning_rate=2e-3, batch_size=64, short=0.75, flash=True)


def encode(a, b, digits):
    """Token rows `a+b=` then c's digits reversed: (n, 3*digits+3). E.g. 3 digits: 123+045=8610."""
    big = 10 ** torch.arange(digits - 1, -1, -1)  # place values, most significant first
    little = 10 ** torch.arange(digits + 1)       # place values, units first
    n = len(a)
    plus, equals = torch.full((n, 1), CHARS.index('+')), torch.full((n, 1), CHARS.index('='))
    return torch.cat([a[:, None] // big % 10, plus, b[:, None] // big % 10, equals,
                      (a + b)[:, None] // little % 10], dim=1)


def cut(digits, short):
    """numbers for draw: uniform below 10**digits, but each cut, with probability short, to its last 1 to digits
    digits (the count uniform). A place where b's digit is 0 has an answer digit that follows a's alone: a signal
    that leads the answer's position to the digits of its place. With both digits random, neither one alone says
    anything about the answer digit, so the place can sit at chance (10%) for thousands of steps."""
    def numbers(shape, generator):
        x = torch.randint(10**digits, shape, generator=generator)
        count = torch.randint(1, digits + 1, shape, generator=generator)
        return torch.where(torch.rand(shape, generator=generator) < short, x % 10**count, x)
    return numbers


def get_batch(n, digits, generator, device, testing=False, short=0.0):
    """Inputs x and targets y (x shifted by one), with -1 as the target wherever the next token is
    still part of the prompt: only the answer's digits are learned. short: see cut."""
    rows = encode(*draw(n, digits, generator, testing, cut(digits, short) if short else None), digits)
    x, y = rows[:, :-1], rows[:, 1:].clone()
    y[:, :2 * digits + 1] = -1  # targets up to `=` are prompt; from there on, the answer
    return x.to(device), y.to(device)


@torch.no_grad()
def score(model, a, b, digits, device, chunk=2000):
    """Greedy answers to a+b, compared with the true ones: exact-match accuracy, accuracy per answer digit
    (units first), and the model's answers as numbers."""
    rows = encode(a, b, digits).to(device)
    prompt_len = 2 * digits + 2
    got = torch.cat([torch.stack(list(extras.sampling.sample_stream(model, rows[i:i + chunk, :prompt_len], digits + 1,
                                                           top_k=1)), 1)
                     for i in range(0, len(rows), chunk)])  # (n, digits+1), units first
    right = got == rows[:, prompt_len:]
    return right.all(1).float().mean().item(), right.float().mean(0).tolist(), (got * 10 ** torch.arange(
        digits + 1, device=device)).sum(1).cpu()


def report(model, digits, n, seed, device):
    """Score n held-out problems drawn with seed and print the table; returns the exact-match accuracy."""
    a, b = draw(n, digits, torch.Generator().manual_seed(seed), testing=True)
    exact, per_digit, got = score(model, a, b, digits, device)
    wrong = (got != a + b).nonzero()[:, 0].tolist()
    print(f"| held-out {digits}-digit problems | exact match | per answer digit, units first |")
    print("| --- | --- | --- |")
    print(f"| {n:,} (seed {seed}) | {exact:.2%} ({len(wrong)} wrong) | {' '.join(f'{p:.2%}' for p in per_digit)} |")
    for i in wrong[:5]:
        x, y = a[i].item(), b[i].item()
        print(f"wrong: {x}+{y}={x + y}, the model says {got[i].item()}")
    return exact


class PlaceMarks(nn.Module):
    """Position coupling: stands in for the learned position table, and gives each position two learned vectors
    instead: one for the digit place it reads (a's and b's digits) or predicts ('=' and the answer), one for the
    place its carry goes to (a's and b's digits) or that it predicts (the answer). An answer position then finds
    the two digits it adds, and the two whose carry it needs, by matching marks, whatever the place."""
    def __init__(self, digits, n_embd):
        super().__init__()
        places = list(range(digits, 0, -1))  # a's and b's digits, most significant first: their place
        answer = [1] + list(range(2, digits + 2))  # '=' predicts the units: 1; answer digit k predicts place k + 2
        self.register_buffer('place', torch.tensor(places + [0] + places + answer), persistent=False)  # '+': 0
        carries = [p + 1 for p in places]  # a's and b's digits: the place their carry goes to
        self.register_buffer('carry', torch.tensor(carries + [0] + carries + answer), persistent=False)
        self.coupling, self.carrying = nn.Embedding(digits + 2, n_embd), nn.Embedding(digits + 2, n_embd)

    def forward(self, positions):
        return self.coupling(self.place[positions]) + self.carrying(self.carry[positions])


def build(cfg):
    """gpt.py's GPT for the rows of cfg.digits-digit problems (inputs of 3 * digits + 2 tokens); with cfg.coupling,
    PlaceMarks instead of its learned position table; with cfg.flash, attention in the fused kernel (same weights)."""
    model = gpt.GPTLanguageModel(len(CHARS), cfg.n_embd, cfg.n_head, cfg.n_layer, 3 * cfg.digits + 2, 0.0, cfg.flash)
    if cfg.coupling:
        model.position_embedding_table = PlaceMarks(cfg.digits, cfg.n_embd)
        model.apply(model._init_weights)  # gpt.py's init (std 0.02) for the marks too
    return model


def load(path, device):
    """The addition model saved at path and its settings, or a one-line error (older checkpoints: no coupling, no
    flash)."""
    older = {'coupling': False, 'flash': False}
    return load_model(path, device, CHARS, build, 'addition model', 'ex2_addition.py', older)


def train(cfg):
    """Train a GPT on freshly drawn training problems and save it to cfg.ckpt_path: (model, training seconds)."""
    torch.manual_seed(cfg.seed)
    g, g_val = torch.Generator().manual_seed(cfg.seed), torch.Generator().manual_seed(cfg.seed + 1)
    cfg.block_size = 3 * cfg.digits + 2  # inputs are the rows without their last token
    model = build(cfg).to(cfg.device)
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters; training on {cfg.digits}-digit problems"
          f"{', position coupling' if cfg.coupling else ''}")
    def look():
        return f"{score(model, *draw(1000, cfg.digits, g_val, testing=True), cfg.digits, cfg.device)[0]:.1%}"
    seconds, loss = fit(model, cfg, lambda: [get_batch(cfg.batch_size, cfg.digits, g, cfg.device, short=cfg.short)],
                        look)
    extras.checkpoints.save(cfg.ckpt_path, model, CHARS, cfg, cfg.max_iters, loss)
    print(f"saved to {cfg.ckpt_path}")
    return model, seconds


def main(argv=None):
    """Train and score on held-out problems, or with --eval score the saved model."""
    p, cfg = script_config(__file__, globals(), argv, __doc__, at_least_1=(
        'digits', 'n_layer', 'n_head', 'n_embd', 'batch_size', 'max_iters', 'eval_interval', 'eval_problems'),
        follow=lambda c: LONG if c.digits > 3 and not c.eval else {})
    if cfg.digits > 12:
        p.error(f"--digits must be 12 or fewer, not {cfg.digits}: the held-out rule's hash must fit in 64-bit integers")
    if not 0 <= cfg.short <= 1:
        p.error(f"--short must be a share from 0 to 1, like 0.5, not {cfg.short}")
    if cfg.eval:
        model, saved = load(cfg.ckpt_path, cfg.device)
        return report(model, saved.digits, cfg.eval_problems, cfg.seed, cfg.device)
    model, _ = train(cfg)
    return report(model, cfg.digits, cfg.eval_problems, cfg.seed, cfg.device)


if __name__ == '__main__':
    extras.errors.run(main)
