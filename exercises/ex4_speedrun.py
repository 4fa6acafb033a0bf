"""EX4 as a laptop speedrun: the lowest val loss in the wall time of a CPU run, changes added one by one.

The video's description: "Read some transformer papers and implement one additional feature or change that
people seem to use. Does it improve the performance of your GPT?" Here: what do the tricks that
modded-nanogpt's and nanochat's logs report as paying off at small scale buy on a laptop CPU?

The rules:
- the data, the split and the evaluation are `gpt.py`'s (`gpt.get_batch`, `gpt.estimate_loss` on fixed
  batches, the same for every run);
- the budget, per seed, is the training time of `python gpt.py` with its CPU values, run first with that
  seed in the same program: the first row;
- every other row trains for that many seconds on its own clock, which stops while it evaluates (as in
  modded-nanogpt); the learning-rate schedule runs on the clock's fraction of the budget;
- the rows are cumulative, a record table: each adds one change to the row above, with 3 seeds; a change
  that does not lower the mean val loss is not kept, and the next row builds on the last kept one.
The changes are listed above CHANGES, each applied in `build` and `run`: Muon, squared
ReLU, zero-initialised projections, logit soft-capping, warmup-stable-decay, learning rates, batch 32,
value embeddings, fewer Newton-Schulz steps, batch and context schedules. A last row trains the kept
changes for half of each seed's budget.

`python exercises/ex4_speedrun.py` runs the table; the results are in docs/results.md."""
import contextlib
import io
import pathlib
import statistics
import sys
import tempfile
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402
from extras.muon import Muon, orthogonalize  # noqa: E402

# settings (each can be changed on the command line: --name=value)
record = 'clock,muon,batch32,wsd,relu2,zeroinit,softcap,vembed,ns3,bsched,ctxsched'  # each added to the rows above
seeds = '1337,42,7'       # comma-separated random seeds: every row once per seed
budget = 0.0              # seconds of training per run; 0: the seed's `python gpt.py` training time, measured first
baseline_iters = 3000     # the steps of the `python gpt.py` run that sets the budget (its CPU value)
evals = 20                # evaluations per run, spread evenly over the budget (off the clock)
target = 1.89             # report the time to the first val loss at or below this
early = 1.0               # seconds of clock between extra evaluations until the target is reached (off the clock)
device = 'cpu'            # the CPU run is the one to beat ('cuda' and 'mps' run the same small models)
input_file = 'input.txt'  # tiny Shakespeare (downloaded if this is missing)

# the changes --record may name: clock (gpt.py's recipe on a clock that stops for evaluations), muon (Muon for
# the blocks' matrices, AdamW for the rest), relu2 (squared ReLU), zeroinit (each block's output projections start
# at zero), softcap (logits squashed to 15 tanh(logits / 15)), wsd (warmup-stable-decay), lr2x (both learning
# rates doubled), batch32 (32 sequences a step), vembed (value embeddings: a token table per block added to the
# attention's values), ns3 (3 Newton-Schulz steps instead of 5), bsched (half the batch for the first third,
# double for the last), ctxsched (context 32 for the first half), muon2x and adam2x (one learning rate doubled)
MUON_LR = 0.02  # Muon's peak learning rate (ex4_literature.py's muon_lr)
CHANGES = ('clock', 'muon', 'relu2', 'zeroinit', 'softcap', 'wsd', 'lr2x', 'batch32', 'vembed', 'ns3', 'bsched',
           'ctxsched', 'muon2x', 'adam2x')


class SoftCap(nn.Module):
    """cap * tanh(x / cap): logits stay within +-cap, without changing the small ones."""
    def __init__(self, cap=15.0):
        super().__init__()
        self.cap = cap

    def forward(self, x):
        return self.cap * torch.tanh(x / self.cap)


def settings(changes, c):
    """gpt.py's CPU values (batch 48), or with batch32's batch."""
    cfg = extras.config.parse_config([f'--device={c.device}', '--settings=cpu', f'--input_file={c.input_file}'],
                                     vars(gpt))
    if 'batch32' in changes:
        cfg.batch_size = 32
    return cfg


class ValueEmbedAttention(gpt.MultiHeadAttention):
    """gpt.MultiHeadAttention whose values get ve (B,T,n_embd) added, head by head: a token's own identity reaches
    every block's values directly, not only through the residual stream. The model sets ve before each forward."""
    ve = None

    def forward(self, x):
        ves = self.ve.split(self.heads[0].value.out_features, dim=-1)  # (B,T,hs) for each head
        out = torch.cat([F.scaled_dot_product_attention(h.query(x), h.key(x), h.value(x) + ve, is_causal=True)
                         for h, ve in zip(self.heads, ves)], dim=-1)  # each head as gpt.py's Head (dropout 0)
        return self.proj(out)


def add_value_embeddings(model, vocab_size, cfg):
    """vembed: a token table per block, outside model.blocks (so Muon leaves it to AdamW), looked up before each
    forward and handed to that block's attention."""
    for block in model.blocks:
        block.sa = ValueEmbedAttention(cfg.n_embd, cfg.n_head, cfg.block_size, 0.0)
    model.value_embeds = nn.ModuleList(nn.Embedding(vocab_size, cfg.n_embd) for _ in model.blocks)
    model.apply(model._init_weights)

    def look_up(model, args):
        for block, table in zip(model.blocks, model.value_embeds):
            block.sa.ve = table(args[0])
    model.register_forward_pre_hook(look_up)


class SquaredReLU(nn.Module):
    """relu(x)**2 (Primer; modded-nanogpt), in place of the feed-forward's ReLU."""
    def forward(self, x):
        return F.relu(x).square()


def build(changes, vocab_size, cfg):
    """gpt.py's model with the model changes among changes."""
    model = gpt.GPTLanguageModel(vocab_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, 0.0)
    if 'relu2' in changes:
        for block in model.blocks:
            block.ffwd.net[1] = SquaredReLU()
    if 'vembed' in changes:
        add_value_embeddings(model, vocab_size, cfg)
    if 'zeroinit' in changes:
        for block in model.blocks:
            nn.init.zeros_(block.sa.proj.weight)
            nn.init.zeros_(block.ffwd.net[2].weight)
    if 'softcap' in changes:
        model.lm_head = nn.Sequential(model.lm_head, SoftCap())
    return model


def baseline(seed, c):
    """`python gpt.py --seed=seed` (its CPU values, c.baseline_iters steps), quietly: (best val loss, seconds,
    seconds to the first evaluation at or below c.target, or None), read from its checkpoint's history."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = extras.config.parse_config([f'--device={c.device}', '--settings=cpu', f'--input_file={c.input_file}',
                                          f'--seed={seed}', f'--max_iters={c.baseline_iters}',
                                          f'--ckpt_path={tmp}/ckpt.pt'], vars(gpt))
        torch.manual_seed(seed)
        start = time.time()
        with contextlib.redirect_stdout(io.StringIO()):
            best = gpt.train(cfg)
        seconds = time.time() - start
        history = torch.load(f'{tmp}/ckpt.pt', weights_only=True)['history']
    return best, seconds, next((s for _, s, _, val in history if val <= c.target), None)


def batch_shape(frac, changes, cfg):
    """(sequences, characters each) of the batch at this fraction of the budget."""
    batch = cfg.batch_size * ((1 / 2, 1, 2)[min(2, int(frac * 3))] if 'bsched' in changes else 1)
    return int(batch), cfg.block_size // 2 if 'ctxsched' in changes and frac < 0.5 else cfg.block_size


def run(changes, seed, seconds, c, chars, splits):
    """Train for `seconds` on a clock that stops while evaluating: (final val loss, steps, seconds to the target or
    None, [(clock, val loss)])."""
    torch.manual_seed(seed)
    cfg = settings(changes, c)
    model = build(changes, len(chars), cfg).to(c.device)
    lr = cfg.learning_rate * (2 if {'lr2x', 'adam2x'} & set(changes) else 1)
    if 'muon' in changes:
        optimizer = Muon(model, lr, MUON_LR * (2 if {'lr2x', 'muon2x'} & set(changes) else 1),
                                    ns_steps=3 if 'ns3' in changes else 5)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=c.device in ('cuda', 'cpu'))
    peaks = [g['lr'] for g in optimizer.param_groups]
    warmup = cfg.warmup_iters / cfg.max_iters  # gpt.py's 50 of 3000 steps, as a fraction of the budget
    clock, steps, history, spread, soon = 0.0, 0, [], 0, 0.0
    while clock < seconds:
        even = clock >= spread * seconds / c.evals
        if even or (clock >= soon and all(v > c.target for _, v in history)):  # an evaluation, off the clock
            history.append((clock, gpt.estimate_loss(model, splits, cfg.eval_iters, 16, 64, c.device)['val']))
            model.train()
            spread, soon = spread + even, clock + c.early
        start = time.perf_counter()
        for group, peak in zip(optimizer.param_groups, peaks):
            decay = 'wsd' if 'wsd' in changes else 'cosine'  # cosine: to a tenth, gpt.py's before
            group['lr'] = peak * extras.schedule.factor(clock / seconds, warmup, decay)
        x, y = gpt.get_batch(splits['train'], *batch_shape(clock / seconds, changes, cfg), c.device)
        with extras.precision.autocast(c.device):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        clock += time.perf_counter() - start
    history.append((clock, gpt.estimate_loss(model, splits, cfg.eval_iters, 16, 64, c.device)['val']))
    return history[-1][1], steps, next((s for s, v in history if v <= c.target), None), history


def newton_schulz_cost(chars, c, steps=5):
    """Milliseconds of Muon's orthogonalisation (with this many Newton-Schulz steps) per step at the CPU settings:
    every block matrix's update, one batch per shape, as Muon.step does it."""
    cfg = settings((), c)
    model = build((), len(chars), cfg)
    shapes = {p.shape for p in model.blocks.parameters() if p.ndim == 2}
    grads = {s: torch.randn(sum(p.shape == s for p in model.blocks.parameters()), *s) for s in shapes}
    for _ in range(3):
        [orthogonalize(g, steps) for g in grads.values()]
    start = time.perf_counter()
    for _ in range(50):
        [orthogonalize(g, steps) for g in grads.values()]
    return (time.perf_counter() - start) / 50 * 1000


def main(argv=None):
    """The baselines first (they set each seed's budget), then the record table's rows, each on every seed."""
    p, c = script_config(__file__, globals(), argv, __doc__, at_least_1=('evals', 'baseline_iters'))
    names = c.record.split(',')
    unknown = [n for n in names if n not in CHANGES]
    if unknown or len(set(names)) < len(names):
        p.error(f"--record must name each change at most once, from {', '.join(CHANGES)}, not {c.record!r}")
    if not c.early > 0:
        p.error(f"--early must be above 0 seconds, like 1.0, not {c.early}")
    if not c.budget >= 0:
        p.error(f"--budget must be 0 (the baseline's time) or more seconds, not {c.budget}")
    chars, splits = gpt.load_data(c.input_file, 64)
    base = {}
    for seed in c.seeds:  # gpt.py's own run, its evaluations on the clock: the budget
        best, seconds, reached = baseline(seed, c)
        base[seed] = (best, c.budget or seconds, reached)
        print(f"python gpt.py, seed {seed}: best val {best:.4f} in {seconds:.1f}s; val <= {c.target} at "
              f"{'never' if reached is None else f'{reached:.0f}s'}", flush=True)
    if 'muon' in names:
        print(f"Muon's Newton-Schulz iteration: {newton_schulz_cost(chars, c):.1f} ms a step with 5 steps, "
              f"{newton_schulz_cost(chars, c, 3):.1f} ms with 3; a step of gpt.py's run with its evaluations: "
              f"{statistics.mean(b[1] for b in base.values()) / c.baseline_iters * 1000:.1f} ms", flush=True)
    rows = [('python gpt.py', (), [(b[0], c.baseline_iters, b[2]) for b in base.values()], True)]
    kept = ()
    for name in names:
        changes = kept + (name,)
        results = []
        for seed in c.seeds:
            val, steps, reached, _ = run(changes, seed, base[seed][1], c, chars, splits)
            results.append((val, steps, reached))
            print(f"{'+'.join(changes)}, seed {seed}: val {val:.4f} after {steps} steps; val <= {c.target} at "
                  f"{'never' if reached is None else f'{reached:.0f}s'}", flush=True)
        last_kept = rows[-1 if rows[-1][3] else max(i for i, r in enumerate(rows) if r[3])]
        better = statistics.mean(r[0] for r in results) < statistics.mean(r[0] for r in last_kept[2])
        better = better or name == 'clock'  # the harness itself: kept, whatever it gives
        kept = changes if better else kept
        rows.append((name, changes, results, better))
    half = {seed: run(kept, seed, base[seed][2] / 2, c, chars, splits)[:3]
            for seed in c.seeds if base[seed][2] is not None}
    for seed, (val, steps, reached) in half.items():
        print(f"{'+'.join(kept)} in half of gpt.py's {base[seed][2]:.0f}s to {c.target}, seed {seed}: val {val:.4f} "
              f"after {steps} steps; val <= {c.target} at {'never' if reached is None else f'{reached:.1f}s'}",
              flush=True)
    print(f"\n| row | change | val loss: mean (range) over seeds {', '.join(map(str, c.seeds))} | gain | steps | "
          f"seconds to val {c.target} | kept |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    last = None
    for i, (name, changes, results, good) in enumerate(rows):
        vals = [r[0] for r in results]
        hit = [r[2] for r in results if r[2] is not None]
        gain = '' if last is None else f"{statistics.mean(vals) - last:+.4f}"
        print(f"| {i} | {name} | {statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f}) | {gain} | "
              f"{statistics.mean(r[1] for r in results):.0f} | "
              f"{f'{statistics.mean(hit):.0f}' if len(hit) == len(results) else f'{len(hit)} of {len(results)}'} | "
              f"{'yes' if good else 'no'} |")
        last = statistics.mean(vals) if good else last
    if half:
        vals, hit = [h[0] for h in half.values()], [h[2] for h in half.values() if h[2] is not None]
        print(f"| {len(rows)} | the kept rows in half of gpt.py's time to {c.target} | {statistics.mean(vals):.4f} "
              f"({min(vals):.4f}-{max(vals):.4f}) | | {statistics.mean(h[1] for h in half.values()):.0f} | "
              f"{f'{statistics.mean(hit):.1f}' if hit else 'never'} ({len(hit)} of {len(half)} seeds in time) | |")
    return rows + [('half', kept, list(half.values()), None)]


if __name__ == '__main__':
    extras.errors.run(main)
