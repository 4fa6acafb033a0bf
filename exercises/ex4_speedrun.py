"""EX4 as a speedrun: the lowest val loss a laptop CPU reaches in a wall-time budget.

The video's description: "Read some transformer papers and implement one additional feature or change that
people seem to use. Does it improve the performance of your GPT?" The video reaches val loss 1.48 on an A100
and says not to try its model on a CPU (1:40:56). Here: how close do changes from the literature (Muon,
warmup-stable-decay, squared ReLU, value embeddings, rotary positions, QK-norm, bfloat16, weight decay, ...)
get a 2-core CPU in 3, 10 or 30 minutes?

`python exercises/ex4_speedrun.py --minutes=30` trains the best recipe found (the settings below; dropout
follows from the budget) and samples from it. The whole command fits the budget: the schedule runs on the
wall clock, progress evaluations count, and the time the final figure and the sample take is measured
first and kept aside.
The final figure is the lecture's estimate: `gpt.estimate_loss` with 200 batches of 64 sequences at the
model's block_size, the same batches for every run. Hints: a lever is one name in --recipe;
`--levers=a,b` trains the recipe and then the recipe with each of them switched (added or removed) on
every seed, and prints a table; `--baseline=True` first runs `python gpt.py` (its CPU values) and
evaluates its model the same way; `--log=runs.jsonl` keeps every run, `--picture=runs.jsonl` draws them.
The levers: muon (Muon for the blocks' matrices, AdamW for the rest), cosine (a cosine decay to a tenth,
not warmup-stable-decay), relu2 (squared ReLU), vembed (a token table per block added to the attention's
values), rope (rotary positions, no position table), qknorm (queries and keys RMS-normalised), zeroinit
(output projections start at zero), softcap (logits squashed to 15 tanh(x / 15)), reshuffle (epochs:
each character a target once per epoch, not batches drawn at random), fp32 (no bfloat16 autocast),
compile (torch.compile). The results: docs/results.md."""
import time

STARTED = time.time()  # the budget counts from here: the imports below take seconds too
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402
from extras.muon import Muon  # noqa: E402

# settings (each can be changed on the command line: --name=value)
minutes = 3.0             # wall time of a run: training, evaluations, the final estimate and the sample
recipe = 'muon,qknorm,reshuffle'  # the levers this run uses (the list above)
n_layer = 6               # transformer blocks
n_embd = 256              # embedding dimension
n_head = 4                # attention heads per block
block_size = 128          # context length
batch_size = 24           # sequences a step
learning_rate = 2e-3      # AdamW's peak learning rate (embeddings, norms, head; everything without muon)
muon_lr = 0.02            # Muon's peak learning rate for the blocks' matrices
weight_decay = 0.01       # decoupled weight decay of every weight (0.01: AdamW's default, as gpt.py)
dropout = 0.0             # dropout while training (attention, residual branches); 0.1 above 10 minutes
warmup = 0.02             # share of the training time spent warming the learning rate up
evals = 10                # progress evaluations (10 fixed batches of 64 a split), spread over the run
seeds = '1337'            # comma-separated random seeds: one run each
levers = ''               # comma-separated levers: the recipe with each switched, on every seed, as a table
baseline = False          # first run `python gpt.py` (CPU values) on each seed, evaluated the same way
log = ''                  # a file to append each run to, one JSON line (for --picture)
picture = ''              # draw the runs in this log file as val loss against minutes (a .png beside it)
max_new_tokens = 300      # characters sampled at the end of each run
device = 'cpu'            # the CPU is what this is about ('cuda' and 'mps' run it too)
input_file = 'input.txt'  # tiny Shakespeare (downloaded if this is missing)

LEVERS = ('muon', 'cosine', 'relu2', 'vembed', 'rope', 'qknorm', 'zeroinit', 'softcap', 'reshuffle', 'fp32',
          'compile')
FINAL = 200  # batches of 64 in the final estimate of each split: the lecture's eval_iters


def rotate(x, cos, sin):
    """Rotary positions: each pair of channels (i, i + d/2) of x (B,H,T,d) turned by its position's angle."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    """All heads at once (gpt.py's MultiHeadAttention as EX1 batches it), with the attention levers."""
    def __init__(self, c, use):
        super().__init__()
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd, bias=False)  # gpt.py's key, query and value, every head
        self.proj = nn.Linear(c.n_embd, c.n_embd)
        self.n_head, self.dropout, self.qknorm = c.n_head, c.dropout, 'qknorm' in use
        self.register_buffer('tril', torch.tril(torch.ones(c.block_size, c.block_size)), persistent=False)

    def forward(self, x, ve, rope):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.qkv(x).split(C, 2))
        if ve is not None:  # vembed: the token's own row added to the values
            v = v + ve.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.qknorm:  # every query and key scaled to the same length: no runaway attention logits
            q, k = F.rms_norm(q, (q.size(-1),)), F.rms_norm(k, (k.size(-1),))
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        att = (q @ k.transpose(-2, -1)) * k.size(-1) ** -0.5  # gpt.py's Head lines (bfloat16's SDPA is slower here)
        att = F.softmax(att.masked_fill(self.tril[:T, :T] == 0, float('-inf')), dim=-1)
        y = F.dropout(att, self.dropout, self.training) @ v
        return F.dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)), self.dropout, self.training)


class Block(nn.Module):
    """gpt.py's Block: pre-norm attention and feed-forward, each added to the residual stream."""
    def __init__(self, c, use):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.sa = Attention(c, use)
        self.fc, self.out = nn.Linear(c.n_embd, 4 * c.n_embd), nn.Linear(4 * c.n_embd, c.n_embd)
        self.relu2, self.dropout = 'relu2' in use, c.dropout

    def forward(self, x, ve, rope):
        x = x + self.sa(self.ln1(x), ve, rope)
        h = F.relu(self.fc(self.ln2(x)))
        h = h.square() if self.relu2 else h  # relu2: squared ReLU (Primer; modded-nanogpt)
        return x + F.dropout(self.out(h), self.dropout, self.training)


class SpeedrunGPT(nn.Module):
    """gpt.py's GPTLanguageModel with the model levers among use."""
    def __init__(self, vocab_size, c, use):
        super().__init__()
        self.block_size, self.softcap = c.block_size, 'softcap' in use
        self.token_embedding_table = nn.Embedding(vocab_size, c.n_embd)
        if 'rope' not in use:
            self.position_embedding_table = nn.Embedding(c.block_size, c.n_embd)
        else:  # the angles: position t times a frequency per channel pair, from 1 down to 1/10000
            hs = c.n_embd // c.n_head
            angle = torch.outer(torch.arange(c.block_size), 10000 ** (-torch.arange(0, hs, 2) / hs))
            self.register_buffer('cos', angle.cos(), persistent=False)
            self.register_buffer('sin', angle.sin(), persistent=False)
        self.blocks = nn.ModuleList(Block(c, use) for _ in range(c.n_layer))
        if 'vembed' in use:  # outside blocks: Muon leaves the tables to AdamW
            self.value_embeds = nn.ModuleList(nn.Embedding(vocab_size, c.n_embd) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, vocab_size)
        for m in self.modules():  # gpt.py's init: normal(0, 0.02), zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for b in self.blocks if 'zeroinit' in use else ():  # each block starts as the identity
            nn.init.zeros_(b.sa.proj.weight)
            nn.init.zeros_(b.out.weight)

    def forward(self, idx, targets=None):
        T = idx.size(1)
        x = self.token_embedding_table(idx)
        rope = (self.cos[:T], self.sin[:T]) if hasattr(self, 'cos') else None
        if rope is None:
            x = x + self.position_embedding_table(torch.arange(T, device=idx.device))
        ves = [t(idx) for t in self.value_embeds] if hasattr(self, 'value_embeds') else [None] * len(self.blocks)
        for block, ve in zip(self.blocks, ves):
            x = block(x, ve, rope)
        logits = self.lm_head(self.ln_f(x)).float()
        logits = 15 * torch.tanh(logits / 15) if self.softcap else logits
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens):
        """gpt.py's generate: the last block_size characters in, one character sampled out, repeated."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])
            idx = torch.cat((idx, torch.multinomial(F.softmax(logits[:, -1], dim=-1), 1)), dim=1)
        return idx


class Epochs:
    """reshuffle: batches that go through the text epoch by epoch, each epoch its windows (starting at a random
    offset, one context apart) in a new random order, so every character is a target once per epoch."""
    def __init__(self, data, block_size, device):
        self.data, self.block_size, self.device, self.order = data, block_size, device, torch.zeros(0, dtype=int)

    def next(self, batch_size):
        if len(self.order) < batch_size:
            offset = int(torch.randint(self.block_size, ()))
            starts = torch.arange(offset, len(self.data) - self.block_size - 1, self.block_size)
            self.order = starts[torch.randperm(len(starts))]
        ix, self.order = self.order[:batch_size], self.order[batch_size:]
        x = torch.stack([self.data[i:i + self.block_size + 1] for i in ix]).long().to(self.device)
        return x[:, :-1], x[:, 1:]


def train(c, use, seed, chars, splits, t0, deadline):
    """One run of the recipe `use` that began at t0 (time.time()) and ends by deadline: a dict of what it reached."""
    began = time.time()
    torch.manual_seed(seed)
    model = SpeedrunGPT(len(chars), c, use).to(c.device)
    dtype = 'float32' if 'fp32' in use else 'auto'
    if 'muon' in use:
        half = extras.precision.amp_dtype(c.device, dtype) == 'bfloat16'  # its Newton-Schulz steps too (Muon's)
        optimizer = Muon(model, c.learning_rate, c.muon_lr, weight_decay=c.weight_decay, matrix_decay=c.weight_decay,
                         ns_dtype=torch.bfloat16 if half else None)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay)
    peaks = [g['lr'] for g in optimizer.param_groups]
    fast = torch.compile(model) if 'compile' in use else model
    if 'compile' in use:  # compile now, on the clock: a forward and backward whose gradients are dropped
        with extras.precision.autocast(c.device, dtype):
            fast(*gpt.get_batch(splits['train'], c.batch_size, c.block_size, c.device))[1].backward()
        optimizer.zero_grad(set_to_none=True)
    epochs = Epochs(splits['train'], c.block_size, c.device) if 'reshuffle' in use else None
    # what must fit after training: the final estimate (timed again at each progress evaluation, as the
    # machine's speed drifts) and the sample (timed now, at full context)
    with extras.precision.autocast(c.device, dtype):
        gpt.estimate_loss(model, {'val': splits['val']}, 1, 64, c.block_size, c.device)  # a first call
        t = time.time()
        model.generate(torch.zeros((1, c.block_size), dtype=torch.long, device=c.device), 5)
        sample_s = (time.time() - t) / 5 * c.max_new_tokens
    history, step, eval_at, stop = [], 0, 0, deadline
    while True:
        now = time.time()
        if now >= began + eval_at * (stop - began) / c.evals or now >= stop:  # once in a while: evaluate
            t = time.time()
            with extras.precision.autocast(c.device, dtype):
                losses = gpt.estimate_loss(model, splits, 10, 64, c.block_size, c.device)
            per_batch = (time.time() - t) / 20
            stop = deadline - 1.2 * (per_batch * 2 * FINAL + sample_s) - 1.0  # training ends here
            if step == 0 and stop <= time.time():
                raise extras.errors.UserError(
                    f"--minutes={c.minutes:g} leaves no time to train: the final estimate and the sample take about "
                    f"{deadline - stop:.0f} s at this model's size; give more minutes or a smaller model")
            history.append((time.time() - t0, step, losses['val']))
            print(f"{history[-1][0] / 60:5.1f} min  step {step:6,d}  train {losses['train']:.4f}  "
                  f"val {losses['val']:.4f}", flush=True)
            eval_at += 1
        if time.time() >= stop:
            break
        frac = (time.time() - began) / (stop - began)  # the schedule runs on the clock
        for group, peak in zip(optimizer.param_groups, peaks):
            group['lr'] = peak * extras.schedule.factor(frac, c.warmup, 'cosine' if 'cosine' in use else 'wsd')
        x, y = epochs.next(c.batch_size) if epochs else gpt.get_batch(splits['train'], c.batch_size,
                                                                      c.block_size, c.device)
        with extras.precision.autocast(c.device, dtype):
            _, loss = fast(x, y)
        if not math.isfinite(loss.item()):
            raise extras.errors.UserError(f"the loss became {loss.item()} at step {step}: lower --learning_rate "
                                          "or --muon_lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
    with extras.precision.autocast(c.device, dtype):  # the lecture's estimate
        final = gpt.estimate_loss(model, splits, FINAL, 64, c.block_size, c.device)
        model.eval()  # no dropout while sampling
        text = model.generate(torch.zeros((1, 1), dtype=torch.long, device=c.device), c.max_new_tokens)
    return dict(model=model, steps=step, history=history, train=final['train'], val=final['val'], dropout=c.dropout,
                tokens_per_s=step * c.batch_size * c.block_size / (stop - began),
                sample=''.join(chars[i] for i in text[0].tolist()))


def baseline_run(seed, c, chars, splits, more=()):
    """`python gpt.py --seed=seed --settings=cpu` (and the settings in more), quietly; its best model evaluated by
    the lecture's estimate."""
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = extras.config.parse_config(['--settings=cpu', f'--device={c.device}', f'--input_file={c.input_file}',
                                          f'--seed={seed}', f'--ckpt_path={tmp}/ckpt.pt', '--max_new_tokens=0',
                                          '--more_chars=0', *more], vars(gpt))
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(io.StringIO()):
            gpt.train(cfg)
        model = gpt.GPTLanguageModel(len(chars), cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, 0.0)
        model.load_state_dict(torch.load(f'{tmp}/ckpt.pt', weights_only=True)['model'])
    with extras.precision.autocast(c.device):
        final = gpt.estimate_loss(model.to(c.device), splits, FINAL, 64, cfg.block_size, c.device)
    return dict(minutes=(time.time() - began) / 60, train=final['train'], val=final['val'], steps=cfg.max_iters)


def draw(path):
    """The runs in the log at path as val loss against minutes, with the lecture's 1.48: path with .png."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    runs = [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    label = [r['name'] + (f", dropout {r['dropout']:g}" if 'dropout' in r else '') for r in runs]
    for name in dict.fromkeys(label):  # each recipe and dropout: its runs, and a line through the means
        mine = [r for r, n in zip(runs, label) if n == name]
        dots = ax.scatter([r['minutes'] for r in mine], [r['val'] for r in mine], label=name, alpha=0.6)
        budgets = sorted({r['budget'] for r in mine})
        xs = [statistics.mean(r['minutes'] for r in mine if r['budget'] == b) for b in budgets]
        ys = [statistics.mean(r['val'] for r in mine if r['budget'] == b) for b in budgets]
        ax.plot(xs, ys, color=dots.get_facecolor()[0], alpha=0.8)
        for x, y in zip(xs, ys):
            ax.annotate(f'{y:.3f}', (x, y), textcoords='offset points', xytext=(6, 4), fontsize=8)
    ax.axhline(1.48, color='grey', linestyle='--', label="the lecture's 1.48 (A100, 10.8M parameters)")
    ax.set(xscale='log', xlabel='minutes on the CPU (whole command)', ylabel="val loss (lecture's estimate)",
           title='tiny Shakespeare on a CPU: val loss against wall time')
    ax.set_xticks([1, 2, 3, 5, 10, 20, 30], ['1', '2', '3', '5', '10', '20', '30'])
    ax.minorticks_off()
    ax.legend()
    fig.tight_layout()
    fig.savefig(pathlib.Path(path).with_suffix('.png'), dpi=120)
    return pathlib.Path(path).with_suffix('.png')


def main(argv=None, started=None):
    """One run per seed of the recipe (and of each switched lever), then a table when there are several. The first
    run's budget counts from started (time.time(); the script passes the time before its imports) or from now."""
    started = started or time.time()
    # a long run sees the text many times and memorises it without dropout; a short one only pays for it
    p, c = script_config(__file__, globals(), argv, __doc__, at_least_1=('evals',),
                         follow=lambda c: {'dropout': 0.1} if c.minutes > 10 else {})
    if c.picture:
        if not pathlib.Path(c.picture).is_file():
            p.error(f"--picture={c.picture!r} must name a log file written with --log")
        print(f"drew {draw(c.picture)}")
        return None
    use = [n for n in c.recipe.split(',') if n]
    switched = [n for n in c.levers.split(',') if n]
    for setting, names in (('recipe', use), ('levers', switched)):
        if any(n not in LEVERS for n in names) or len(set(names)) < len(names):
            p.error(f"--{setting} must name each lever at most once, from {', '.join(LEVERS)}, not {names}")
    if not 0 < c.minutes < math.inf:
        p.error(f"--minutes must be above 0, like 3 or 30, not {c.minutes}")
    if not (0 < c.muon_lr < math.inf and 0 <= c.weight_decay < math.inf and 0 <= c.warmup < 1):
        p.error("--muon_lr must be above 0, --weight_decay 0 or more, --warmup at least 0 and below 1")
    chars, splits = gpt.load_data(c.input_file, c.block_size)
    variants = [('recipe', use)] + [(f"{'-' if n in use else '+'}{n}", [u for u in use if u != n] if n in use
                                     else use + [n]) for n in switched]
    results = {}
    for seed in c.seeds:
        if c.baseline:
            b = baseline_run(seed, c, chars, splits)
            print(f"python gpt.py, seed {seed}: train {b['train']:.4f}, val {b['val']:.4f} in {b['minutes']:.1f} "
                  "minutes (the lecture's estimate)", flush=True)
            results.setdefault('python gpt.py', []).append(b)
            record(c, 'python gpt.py', seed, b)
        for name, recipe_used in variants:
            began = time.time() if results else started
            print(f"{name} ({','.join(recipe_used) or 'no levers'}), seed {seed}: {c.minutes:g} minutes",
                  flush=True)
            r = train(c, recipe_used, seed, chars, splits, began, began + 60 * c.minutes)
            r['minutes'] = (time.time() - began) / 60
            print(f"the lecture's estimate ({FINAL} batches of 64): train {r['train']:.4f}, val {r['val']:.4f} after "
                  f"{r['steps']:,} steps ({r['tokens_per_s']:,.0f} tokens/s) in {r['minutes']:.2f} minutes\n"
                  f"{r['sample']}\n", flush=True)
            results.setdefault(name, []).append(r)
            record(c, name if switched else ','.join(recipe_used), seed, r)
    if len(results) > 1 or len(c.seeds) > 1:
        first = statistics.mean(r['val'] for r in results['recipe'])
        print(f"| run | val loss, mean (range) over seeds {', '.join(map(str, c.seeds))} | vs the recipe | steps | "
              "minutes |\n| --- | --- | --- | --- | --- |")
        for name, rs in results.items():
            vals = [r['val'] for r in rs]
            print(f"| {name} | {statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f}) | "
                  f"{statistics.mean(vals) - first:+.4f} | "
                  f"{statistics.mean(r.get('steps', 0) for r in rs):,.0f} | "
                  f"{statistics.mean(r['minutes'] for r in rs):.2f} |")
    return results


def record(c, name, seed, r):
    """Append one run to --log as a JSON line (nothing without --log)."""
    if c.log:
        keep = {k: r[k] for k in ('dropout', 'minutes', 'train', 'val', 'steps', 'history') if k in r}
        with open(c.log, 'a', encoding='utf-8') as f:
            f.write(json.dumps(dict(name=name, seed=seed, budget=c.minutes, **keep)) + '\n')


if __name__ == '__main__':
    extras.errors.run(lambda: main(started=STARTED))
