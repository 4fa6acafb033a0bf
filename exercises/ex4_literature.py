"""EX4: what changes from the transformer literature buy on gpt.py's model, measured at equal wall time.

The question (the video's EX4): pick a change that people use in transformers and see whether it helps.
The setup: the baseline is `python gpt.py` on a CPU: the lecture's architecture at gpt.py's CPU
values (the values after `else`: n_embd 128, 2 blocks of 2 heads, context 64, batch 48, AdamW with
warmup and a linear decay, bfloat16 where the CPU has it).
Each change is built on gpt.py's own classes and trained by `gpt.train`: the same data, loop,
schedule and evaluation. The changes, alone or joined with '+':
- rope: rotary position embeddings in every head instead of the learned position table (Su et al. 2021)
- tie: the lm_head shares the token embedding's weights (Press and Wolf 2017)
- swiglu: a SwiGLU feed-forward, hidden width 8/3 x n_embd so the parameters match (Shazeer 2020)
- relu2: squared ReLU in the feed-forward (So et al. 2021, Primer)
- gelu: GELU in the feed-forward, as GPT-2 (Hendrycks and Gimpel 2016)
- qknorm: RMS-normalised queries and keys before attention, no gain (Henry et al. 2020; Dehghani et al. 2023)
- muon: the Muon optimizer for the blocks' weight matrices (momentum, then the update orthogonalised by a
  Newton-Schulz iteration; Jordan et al. 2024), at muon_lr; AdamW as before for embeddings, lm_head, biases, norms
Equal budget: the baseline trains budget_iters steps; every other variant gets the same wall time: its steps
are budget_iters scaled by the ratio of step times, measured at the start of the run by timing all variants
in turn (5 interleaved rounds, median). Each variant runs once per seed. Reported: best val loss (mean and
range over the seeds), seconds, and seconds to the first val loss at or below 1.89 (evaluated every
eval_interval steps; the time includes the evaluations, as gpt.py prints it).

`python exercises/ex4_literature.py` runs every change alone; `--variants=baseline,rope+tie --budget_iters=3000`
compares a combination with `python gpt.py`'s CPU run. Results: docs/results.md."""
import contextlib
import io
import pathlib
import re
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
from extras.muon import Muon  # noqa: E402  (shared with the speedrun)

# settings (each can be changed on the command line: --name=value)
variants = 'baseline,rope,tie,swiglu,relu2,gelu,qknorm'  # comma-separated; join changes with +, like rope+tie
seeds = '1337,42,7'       # comma-separated random seeds: each variant once per seed
budget_iters = 2000       # the baseline's training steps (python gpt.py: 3000); the others get its wall time
eval_interval = 100       # estimate the losses every this many steps
target = 1.89             # report the time to the first val loss at or below this
muon_lr = 0.02            # Muon's peak learning rate (AdamW's stays at 3e-3; both follow gpt.py's schedule)
device = 'cpu'            # the CPU settings are the baseline: 'cpu' (or 'cuda', 'mps' with the same small model)
input_file = 'input.txt'  # tiny Shakespeare (downloaded if this is missing)

FEATURES = ('rope', 'tie', 'swiglu', 'relu2', 'gelu', 'qknorm', 'muon')


# ----------------------------------------------------------------------------- the changes
def rotate(x, base=10000.0):
    """Rotary position embedding of queries or keys (...,T,hs): pairs of channels turned by angles that grow with
    the position."""
    T, hs = x.shape[-2:]
    freqs = base ** (-torch.arange(0, hs, 2, device=x.device, dtype=torch.float32) / hs)  # (hs/2,)
    angles = torch.arange(T, device=x.device, dtype=torch.float32)[:, None] * freqs  # (T,hs/2)
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class LiteratureHead(gpt.Head):
    """gpt.Head whose attention first normalises (qknorm) and/or rotates (rope) the queries and keys."""
    def __init__(self, n_embd, head_size, block_size, rope, qknorm):
        super().__init__(n_embd, head_size, block_size, 0.0)
        self.rope, self.qknorm = rope, qknorm

    def forward(self, x):
        q, k, v = self.query(x), self.key(x), self.value(x)  # (B,T,hs) each
        if self.qknorm:  # every query and key scaled to length sqrt(head_size): the logits stay bounded
            q, k = F.rms_norm(q, q.shape[-1:]), F.rms_norm(k, k.shape[-1:])
        if self.rope:
            q, k = rotate(q), rotate(k)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)  # gpt.py's Head from here (dropout 0)


class NoPositions(nn.Module):
    """Stands in for the position table when rope gives the positions: adds nothing."""
    def forward(self, positions):
        return 0


class SwiGLU(nn.Module):
    """Feed-forward with a gated linear unit: silu(x W1) * (x W3), then W2; 8/3 x n_embd wide to match 4x ReLU's
    parameters."""
    def __init__(self, n_embd):
        super().__init__()
        hidden = int(8 * n_embd / 3)
        self.w1, self.w3 = nn.Linear(n_embd, hidden), nn.Linear(n_embd, hidden)
        self.w2 = nn.Linear(hidden, n_embd)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ReLU2(nn.Module):
    """Squared ReLU (Primer)."""
    def forward(self, x):
        return F.relu(x).square()


def build(variant, vocab_size, cfg):
    """gpt.py's GPTLanguageModel with the changes named in variant ('baseline', or features joined by +)."""
    features = set() if variant == 'baseline' else set(variant.split('+'))
    model = gpt.GPTLanguageModel(vocab_size, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, 0.0)
    head_size = cfg.n_embd // cfg.n_head
    for block in model.blocks:
        if features & {'rope', 'qknorm'}:
            block.sa.heads = nn.ModuleList(LiteratureHead(cfg.n_embd, head_size, cfg.block_size, 'rope' in features,
                                                          'qknorm' in features) for _ in range(cfg.n_head))
        if 'swiglu' in features:
            block.ffwd = SwiGLU(cfg.n_embd)
        for name, act in (('relu2', ReLU2()), ('gelu', nn.GELU())):
            if name in features:
                block.ffwd.net[1] = act
    if 'rope' in features:
        model.position_embedding_table = NoPositions()
    if 'tie' in features:
        model.lm_head.weight = model.token_embedding_table.weight  # (vocab_size, n_embd) both
    model.apply(model._init_weights)  # gpt.py's init for the new layers too
    return model


def optimizer_for(variant, model, cfg, muon_lr):
    """Muon if the variant has it, else None: gpt.train's own AdamW."""
    return Muon(model, cfg.learning_rate, muon_lr) if 'muon' in variant.split('+') else None


def check_variant(variant):
    """The variant's features, or a UserError naming the unknown ones."""
    unknown = [f for f in variant.split('+') if f not in FEATURES] if variant != 'baseline' else []
    if unknown:
        raise extras.errors.UserError(f"--variants: no change called {', '.join(unknown)}; choose from baseline, "
                            f"{', '.join(FEATURES)}, or join them with +")
    if len({'swiglu', 'relu2', 'gelu'} & set(variant.split('+'))) > 1:
        raise extras.errors.UserError(f"--variants: {variant} has more than one of swiglu, relu2 and gelu: each "
                                      "replaces the same feed-forward activation; choose one")


# ----------------------------------------------------------------------------- the measurement
def step_times(names, vocab_size, cfg, splits, muon_lr, rounds=6, steps=30):
    """Seconds per training step of each variant, timed in turn (interleaved rounds, each in another order; median)."""
    models = {v: build(v, vocab_size, cfg).to(cfg.device) for v in names}
    optims = {v: optimizer_for(v, m, cfg, muon_lr)
              or torch.optim.AdamW(m.parameters(), lr=cfg.learning_rate, fused=cfg.device in ('cuda', 'cpu'))
              for v, m in models.items()}
    times = {v: [] for v in names}
    for r in range(rounds + 1):
        for v in names[r % len(names):] + names[:r % len(names)]:
            start = time.time()
            for _ in range(steps):
                x, y = gpt.get_batch(splits['train'], cfg.batch_size, cfg.block_size, cfg.device)
                with extras.precision.autocast(cfg.device):
                    loss = models[v](x, y)[1]
                optims[v].zero_grad(set_to_none=True)
                loss.backward()
                optims[v].step()
            if r:  # the first round warms up
                times[v].append((time.time() - start) / steps)
    return {v: statistics.median(t) for v, t in times.items()}


def train(variant, seed, iters, c):
    """gpt.train on the variant for iters steps: (best val, seconds, seconds to the target or None, parameters,
    [(seconds, val loss) at each evaluation])."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = extras.config.parse_config([f'--device={c.device}', '--settings=cpu', f'--input_file={c.input_file}',
                                f'--seed={seed}', f'--ckpt_path={tmp}/ckpt.pt', f'--max_iters={iters}',
                                f'--eval_interval={c.eval_interval}'], vars(gpt))
        torch.manual_seed(seed)
        chars, _ = gpt.load_data(cfg.input_file, cfg.block_size)
        model = build(variant, len(chars), cfg)
        out = io.StringIO()
        start = time.time()
        with contextlib.redirect_stdout(out):
            best = gpt.train(cfg, model=model, optimizer=optimizer_for(variant, model, cfg, c.muon_lr))
        seconds = time.time() - start
    evals = [(float(s), float(v)) for v, s in re.findall(r'val loss ([\d.]+), ([\d.]+)s', out.getvalue())]
    reached = next((s for s, v in evals if v <= c.target), None)
    return best, seconds, reached, sum(p.numel() for p in model.parameters()), evals


def main(argv=None):
    """Time each variant's step, train each for the baseline's wall time with every seed, print the table."""
    p, c = script_config(__file__, globals(), argv, __doc__, at_least_1=('budget_iters', 'eval_interval'))
    names = c.variants.split(',')
    for v in names:
        check_variant(v)
    names = ['baseline'] + [v for v in names if v != 'baseline']  # the budget is the baseline's
    cfg = extras.config.parse_config([f'--device={c.device}', '--settings=cpu', f'--input_file={c.input_file}'],
                                     vars(gpt))
    chars, splits = gpt.load_data(cfg.input_file, cfg.block_size)
    per_step = step_times(names, len(chars), cfg, splits, c.muon_lr)
    iters = {v: round(c.budget_iters * per_step['baseline'] / per_step[v]) for v in names}
    for v in names:
        print(f"{v}: {per_step[v] * 1000:.1f} ms a step -> {iters[v]} steps in the baseline's time", flush=True)
    results = {v: [] for v in names}
    for seed in c.seeds:  # seeds outermost: the variants of one seed run close together in time
        for v in names:
            results[v].append(train(v, seed, iters[v], c))
            best, seconds, reached, _, _ = results[v][-1]
            print(f"{v}, seed {seed}: best val {best:.4f} in {seconds:.0f}s; val <= {c.target} at "
                  f"{'never' if reached is None else f'{reached:.0f}s'}", flush=True)
    print(f"\n| variant | parameters | steps | best val loss: mean (range) over seeds {', '.join(map(str, c.seeds))} "
          f"| vs baseline | seconds | best val within the baseline's seconds | seconds to val {c.target} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    base = statistics.mean(r[0] for r in results['baseline'])
    for v, rs in results.items():
        # the same seed's baseline time: a variant that ran longer is judged on what it had by then
        within = [min((val for s, val in r[4] if s <= b[1]), default=float('nan'))
                  for r, b in zip(rs, results['baseline'])]
        vals = [r[0] for r in rs]
        hit = [r[2] for r in rs if r[2] is not None]
        some = f" ({len(hit)} of {len(rs)} seeds)" if len(hit) < len(rs) else ""
        to_target = f"{statistics.mean(hit):.0f}{some}" if hit else 'not reached'
        print(f"| {v} | {rs[0][3]:,} | {iters[v]} | {statistics.mean(vals):.4f} ({min(vals):.4f}-{max(vals):.4f}) | "
              f"{statistics.mean(vals) - base:+.4f} | {statistics.mean(r[1] for r in rs):.0f} | "
              f"{statistics.mean(within):.4f} | {to_target} |")
    return results


if __name__ == '__main__':
    extras.errors.run(main)
