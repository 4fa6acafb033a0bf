"""What the arithmetic exercises share (EX2's addition and the calculator): the rule that holds problems out of
training, drawing problems on either side of it, and the training loop that looks at held-out problems as it goes."""
import time

import torch

from extras.precision import autocast
from extras.schedule import cosine


def held_out(a, b):
    """The fixed rule that sets 5% of all problems aside, never trained on: a hash of the pair, so the
    held-out part has every size and carry pattern; a+b and b+a are on the same side."""
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    h = (lo * 1_000_003 + hi) % 2**31 * 2_654_435_761 % 2**32  # Knuth's multiplicative hash
    return h // 2**16 % 20 == 0


def draw(n, digits, generator, testing=False, numbers=None, rule=held_out):
    """n random problems (a, b) from the training part, or from the held-out part if testing; numbers(shape,
    generator) draws the operands (by default uniformly below 10**digits; the calculator draws its own, and
    its own rule(a, b) says which are held out)."""
    a, b = torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    while len(a) < n:  # draw, keep those on the wanted side, until there are enough
        shape = (2, 40 * n if testing else 2 * n)
        x, y = numbers(shape, generator) if numbers else torch.randint(10**digits, shape, generator=generator)
        keep = rule(x, y) == testing
        a, b = torch.cat([a, x[keep]]), torch.cat([b, y[keep]])
    return a[:n], b[:n]


def fit(model, cfg, batch, look, schedule=cosine):
    """cfg.max_iters AdamW steps on batch(), a list of (inputs, targets) parts whose losses are averaged over all
    their targets, the learning rate schedule(it, cfg), printing look() (held-out exact match) every eval_interval
    steps: (training seconds, last loss). The calculator trains with it too, its long rows a part of their own, on
    gpt.py's schedule (extras.schedule.get_lr)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, fused=cfg.device in ('cuda', 'cpu'))
    start, looking, loss = time.time(), 0.0, None
    for it in range(cfg.max_iters + 1):
        if it % cfg.eval_interval == 0 or it == cfg.max_iters:  # a quick look at held-out problems
            t = time.time()
            seen = look()
            looking += time.time() - t
            shown = '(no step yet)' if loss is None else f'{loss.item():.4f}'
            print(f"step {it}: loss {shown}, held-out exact match {seen}, "
                  f"{time.time() - start:.1f}s", flush=True)
        if it == cfg.max_iters:
            break
        for group in optimizer.param_groups:
            group['lr'] = schedule(it, cfg)
        with autocast(cfg.device, cfg.dtype):
            losses = [(model(x, y)[1], (y != -1).sum()) for x, y in batch()]
        loss = sum(part * n for part, n in losses) / sum(n for _, n in losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = time.time() - start
    print(f"trained in {seconds:.1f}s: {seconds - looking:.1f}s of steps, {looking:.1f}s of held-out looks")
    return seconds, loss.item()
