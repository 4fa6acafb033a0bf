"""The video's journey, measured: every model the lecture builds on the way, beside the val loss it shows.

The question: does each step of the video (one head, many heads, feed-forward, blocks, residual
connections, LayerNorm, scaling up) buy what the video says it does, in this code? The setup: each
model is the one the notebook gpt-dev.ipynb builds at that chapter, from its own cells (tagged
stage:NAME; no copies), at the video's small settings at that point (batch 32, context 8, 32-wide
embeddings, AdamW at lr 1e-3 for 5000 steps, losses estimated every 500 steps over 200 batches; the
bigram as in `bigram.py`: lr 1e-2, 3000 steps), trained by the lecture's loop (`train` below), with
PyTorch's default initialisation, as in the video. The last row runs `gpt.py` itself, with the
settings it picks for the device.

`python exercises/milestones.py` runs every row; `--steps=head,multihead` some of them; `--seeds=1337,42`
several seeds; `--plot=milestones.png` draws the table as a chart too. Results: docs/results.md."""
import json
import pathlib
import sys
import tempfile
import time

import torch
import torch.nn as nn
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import bigram  # noqa: E402
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402

# settings (each can be changed on the command line: --name=value)
steps = 'all'          # rows, comma-separated, or all (bigram,head,multihead,ffwd,blocks,residual,layernorm,scaled)
seeds = '1337'         # comma-separated random seeds: each row is trained once per seed
batch_size = 32        # sequences per batch, as in the video up to the scaling-up step
block_size = 8         # context length
n_embd = 32            # embedding dimension
n_head = 4             # heads in multi-headed attention (4 heads of 8)
n_layer = 3            # blocks in the rows that stack them
max_iters = 5000       # training steps of every row but the bigram
learning_rate = 1e-3   # AdamW's learning rate for every row but the bigram
eval_interval = 500    # estimate the losses every this many steps
eval_iters = 200       # batches averaged by each loss estimate
device = 'auto'        # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
input_file = 'input.txt'  # training text (tiny Shakespeare is downloaded if this is missing)
plot = ''              # also draw the table as a chart into this PNG file (needs matplotlib)

NOTEBOOK = pathlib.Path(__file__).resolve().parent.parent / 'gpt-dev.ipynb'

# what the video shows at each step (its val loss), in the order of the video
VIDEO = {'bigram': 2.49, 'head': 2.4, 'multihead': 2.28, 'ffwd': 2.24, 'blocks': None, 'residual': 2.08,
         'layernorm': 2.06, 'scaled': 1.48}
WHAT = {'bigram': 'bigram baseline: the token-embedding table read off as logits',
        'head': 'one self-attention head of size 32',
        'multihead': f'multi-headed self-attention: {n_head} heads, concatenated',
        'ffwd': '+ a Linear and ReLU after attention',
        'blocks': f'{n_layer} blocks, no residual connections',
        'residual': '+ residual pathways, projections, 4x feed-forward',
        'layernorm': '+ pre-LayerNorm in each block and before lm_head',
        'scaled': "gpt.py's own settings for the device"}


def stage_code():
    """{step: the code of the notebook's cell tagged stage:step}, in the notebook's order: the classes the video
    writes at each step, as gpt-dev.ipynb shows them."""
    nb = json.loads(NOTEBOOK.read_text(encoding='utf-8'))
    return {tag[len('stage:'):]: ''.join(cell['source']) for cell in nb['cells']
            for tag in cell.get('metadata', {}).get('tags', []) if tag.startswith('stage:')}


def build(step, vocab_size, c):
    """The model of one step of the video: bigram.py's bigram, or the notebook's BigramLanguageModel as it stands
    at that step (its cells run in order up to that step's, with this script's sizes as their globals)."""
    if step == 'bigram':
        return bigram.BigramLanguageModel(vocab_size)
    names = dict(torch=torch, nn=nn, F=F, vocab_size=vocab_size, n_embd=c.n_embd, n_head=c.n_head,
                 n_layer=c.n_layer, block_size=c.block_size)
    for name, code in stage_code().items():
        exec(code, names)  # the notebook's own cell: class definitions only
        if name == step:
            return names['BigramLanguageModel']()
    raise extras.errors.UserError(f"gpt-dev.ipynb has no cell tagged stage:{step}")


def train(model, splits, max_iters, learning_rate, eval_interval, batch_size, block_size, eval_iters, device):
    """The lecture's training loop: AdamW steps on random batches, the losses printed every eval_interval
    steps and at the last one, which it returns."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    for it in range(max_iters):
        if it % eval_interval == 0 or it == max_iters - 1:
            losses = gpt.estimate_loss(model, splits, eval_iters, batch_size, block_size, device)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
        xb, yb = gpt.get_batch(splits['train'], batch_size, block_size, device)
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return losses


def run_step(step, seed, c):
    """Train one row with one seed: (val loss at the end, parameters, seconds)."""
    start = time.time()
    torch.manual_seed(seed)
    if step == 'scaled':  # gpt.py itself, into a throwaway checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            cfg = extras.config.parse_config([f'--device={c.device}', f'--input_file={c.input_file}', f'--seed={seed}',
                                    f'--ckpt_path={pathlib.Path(tmp) / "ckpt.pt"}'], vars(gpt))
            val = gpt.train(cfg)
            model, _ = extras.checkpoints.load(cfg.ckpt_path, 'cpu', gpt.GPTLanguageModel)
        return val, sum(p.numel() for p in model.parameters()), time.time() - start, f'{cfg.settings} settings'
    chars, splits = gpt.load_data(c.input_file, c.block_size)
    model = build(step, len(chars), c).to(c.device)
    lr, iters = (bigram.learning_rate, bigram.max_iters) if step == 'bigram' else (c.learning_rate, c.max_iters)
    losses = train(model, splits, iters, lr, c.eval_interval, c.batch_size, c.block_size, c.eval_iters, c.device)
    return losses['val'], sum(p.numel() for p in model.parameters()), time.time() - start, f'{iters} steps'


def main(argv=None):
    """Train the chosen rows with each seed and print the table beside the video's figures."""
    p, c = script_config(__file__, globals(), argv, __doc__, at_least_1=(
        'batch_size', 'block_size', 'n_embd', 'n_head', 'n_layer', 'max_iters', 'eval_interval', 'eval_iters'))
    chosen = list(VIDEO) if c.steps == 'all' else c.steps.split(',')
    unknown = [s for s in chosen if s not in VIDEO]
    if unknown:
        p.error(f"--steps: no step called {', '.join(unknown)}; choose from {','.join(VIDEO)} or all")
    rows = {}
    for step in chosen:
        for seed in c.seeds:
            print(f"--- {step} (seed {seed}): {WHAT[step]}", flush=True)
            rows.setdefault(step, []).append(run_step(step, seed, c))
    print(f"\n| step | the model | parameters | val loss, seed {', '.join(map(str, c.seeds))} | the video's "
          f"| measured - video | trained | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for step, results in rows.items():
        vals = [r[0] for r in results]
        mean = sum(vals) / len(vals)
        video = VIDEO[step]
        comparable = video and results[0][3] != 'cpu settings'  # the video's 1.48 is the lecture's settings
        diff = f'{mean - video:+.2f}' if comparable else 'not comparable' if video else ''
        print(f"| {step} | {WHAT[step]} | {results[0][1]:,} | {', '.join(f'{v:.4f}' for v in vals)} | "
              f"{video or 'none shown'} | {diff} | {results[0][3]} | {', '.join(f'{r[2]:.0f}' for r in results)} |")
    if c.plot:
        draw(rows, c.plot)
    return rows


def draw(rows, path):
    """The table as a bar chart: each step's measured val loss (one bar per seed) beside the video's, saved to path."""
    import matplotlib
    matplotlib.use('Agg')  # a file, no window
    import matplotlib.pyplot as plt
    steps = list(rows)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    seeds = len(rows[steps[0]])
    width = 0.8 / (seeds + 1)
    for k in range(seeds):
        ax.bar([i + k * width for i in range(len(steps))], [rows[s][k][0] for s in steps], width,
               label='measured' if k == 0 else None, color='tab:blue', alpha=1 - 0.3 * k)
    video = [VIDEO[s] for s in steps]
    ax.bar([i + seeds * width for i, v in enumerate(video) if v], [v for v in video if v], width, color='tab:orange',
           label="the video's")
    ax.set_xticks([i + seeds * width / 2 for i in range(len(steps))], steps, fontsize=8)
    ax.set_ylim(1.8 if 'scaled' not in steps else 1.3, max(r[0] for rs in rows.values() for r in rs) + 0.1)
    ax.set_ylabel('val loss')
    ax.legend(fontsize=8)
    ax.set_title("Each step of the video, measured (bars per seed) beside the video's val loss", fontsize=10)
    extras.files.save_atomic(path, lambda f: fig.savefig(f, format='png', dpi=90, bbox_inches='tight'))
    print(f"drew the table into {path}")


if __name__ == '__main__':
    extras.errors.run(main)
