"""Exercise 1 of the video: all heads in one class.

The video's description: "EX1: The n-dimensional tensor mastery challenge: Combine the `Head` and
`MultiHeadAttention` into one class that processes all the heads in parallel, treating the heads as
another batch dimension (answer is in nanoGPT)."

Try it first: in gpt.py, MultiHeadAttention runs each Head in turn and concatenates their outputs, as
the video does. Write one class that gives the same output, then come back and read
`BatchedSelfAttention` below (and nanoGPT's `CausalSelfAttention`).

The question this script answers: how much does it buy to run the heads together rather than one
`Head` at a time? It times forward plus backward of two versions of the same layer, with the same
weights, taking turns:
- `gpt`: gpt.py's `MultiHeadAttention`, the video's `torch.cat([h(x) for h in heads], dim=-1)`;
- `batched`: this file's class.

`python exercises/ex1_batched_heads.py` times the CPU settings' shapes and the lecture's; results in
docs/results.md. A test loads a `MultiHeadAttention`'s weights into `BatchedSelfAttention` and checks
that outputs and gradients agree. bench.py times it as a lever of a whole training step."""
import pathlib
import statistics
import sys
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402

# settings (each can be changed on the command line: --name=value)
shapes = 'cpu,lecture'  # which shapes to time: cpu (B16 T64 C128, 4 heads), lecture (B64 T256 C384, 6 heads)
attention = 'explicit,fused'  # attention math to time: explicit (the lecture's), fused (scaled_dot_product_attention)
rounds = 7              # turns taken between the two versions; the table shows medians
repeats = 0             # forward+backward passes per version per turn; 0: about 0.5 s worth, at least 2
device = 'auto'         # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
seed = 1337             # random seed for the weights and inputs

SHAPES = {'cpu': dict(B=16, T=64, C=128, nh=4), 'lecture': dict(B=64, T=256, C=384, nh=6)}


class BatchedSelfAttention(nn.Module):
    """Multi-headed causal self-attention with the heads as a batch dimension: one projection makes every
    head's query, key and value, one attention call runs all heads."""
    def __init__(self, n_embd, n_head, block_size, dropout, flash=False):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=False)  # [all queries; all keys; all values]
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)  # on the attention weights, in attend, and on the output
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)), persistent=False)
        self.flash = flash

    def attend(self, q, k, v):
        """The lecture's Head math on (B,nh,T,hs): scores, causal mask, softmax, weighted sum of the values."""
        T = q.shape[-2]
        if self.flash:  # the same math in one fused kernel
            p = self.dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        wei = q @ k.transpose(-2, -1) * k.shape[-1]**-0.5  # (B,nh,T,T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))
        wei = self.dropout(F.softmax(wei, dim=-1))
        return wei @ v  # (B,nh,T,hs)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # (B,T,C) each
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B,nh,T,hs)
        out = self.attend(q, k, v)  # (B,nh,T,hs): every head at once
        out = out.transpose(1, 2).reshape(B, T, C)  # (B,T,C): the heads side by side, as torch.cat puts them
        return self.dropout(self.proj(out))

    @torch.no_grad()
    def load_from(self, mha):
        """Take the weights of a gpt.MultiHeadAttention: its heads' queries, keys and values become the
        rows of qkv (head 0 first in each third), its projection stays the projection."""
        for i, name in enumerate(('query', 'key', 'value')):
            self.qkv.weight[i * len(self.proj.weight):(i + 1) * len(self.proj.weight)] = torch.cat(
                [getattr(h, name).weight for h in mha.heads])
        self.proj.load_state_dict(mha.proj.state_dict())
        return self


def time_versions(versions, x, rounds, repeats, device):
    """Median milliseconds of forward plus backward for each version, taking turns every round."""
    def once(f):
        x.grad = None
        with extras.precision.autocast(device):
            out = f(x)
        out.float().square().mean().backward()

    def clock(f, n):
        if device == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            once(f)
        if device == 'cuda':
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    for f in versions.values():  # warm-up (allocations, kernel selection), and how long a pass takes
        once(f)
    n = repeats or max(2, round(0.5 / clock(versions['gpt'], 2)))
    times = {name: [] for name in versions}
    for _ in range(rounds):
        for name, f in versions.items():
            times[name].append(clock(f, n) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}, n


def main(argv=None):
    """Time the two versions at each chosen shape and attention kind and print the table."""
    p, c = script_config(__file__, globals(), argv, __doc__)
    chosen, kinds = c.shapes.split(','), c.attention.split(',')
    if any(s not in SHAPES for s in chosen):
        p.error(f"--shapes must be a comma-separated choice of {', '.join(SHAPES)}, not {c.shapes!r}")
    if any(k not in ('explicit', 'fused') for k in kinds):
        p.error(f"--attention must be explicit, fused or explicit,fused, not {c.attention!r}")
    if c.rounds < 1 or c.repeats < 0:
        p.error("--rounds must be 1 or more and --repeats 0 or more")
    print(f"device {c.device}, "
          f"{'bfloat16 autocast' if isinstance(extras.precision.autocast(c.device), torch.autocast) else 'float32'}; "
          f"median of {c.rounds} turns, forward + backward")
    print("\n| shapes | attention | gpt.py (the video's heads) ms | batched ms | gpt.py / batched | passes a turn |")
    print("| --- | --- | --- | --- | --- | --- |")
    results = {}
    for name, kind in [(name, kind) for name in chosen for kind in kinds]:
        s, flash = SHAPES[name], kind == 'fused'
        torch.manual_seed(c.seed)
        mha = gpt.MultiHeadAttention(s['C'], s['nh'], s['T'], 0.0, flash).to(c.device)
        batched = BatchedSelfAttention(s['C'], s['nh'], s['T'], 0.0, flash).to(c.device).load_from(mha)
        x = torch.randn(s['B'], s['T'], s['C'], device=c.device, requires_grad=True)
        versions = {'gpt': mha, 'batched': batched}
        ms, n = time_versions(versions, x, c.rounds, c.repeats, c.device)
        results[name, kind] = ms
        print(f"| {name}: B{s['B']} T{s['T']} C{s['C']}, {s['nh']} heads | {kind} | {ms['gpt']:.2f} | "
              f"{ms['batched']:.2f} | {ms['gpt'] / ms['batched']:.2f}x | {n} |", flush=True)
    return results


if __name__ == '__main__':
    extras.errors.run(main)
