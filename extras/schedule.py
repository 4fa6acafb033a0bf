"""The learning-rate schedules, one shape function for all of them: gpt.py's warmup-stable-decay, EX2's cosine to
a tenth, the speedrun's on a clock, the assistant's linear decays."""
import math


def factor(frac, warmup=0.0, decay=None):
    """The learning rate's share of its peak at frac (0 to 1) of a run: linear warmup over the first `warmup` of it
    (never exactly 0), then by decay: 'wsd' constant, then linearly to 0 over the last 40% (warmup-stable-decay);
    'linear' linearly to 0; 'cosine' a cosine from 1 after the warmup to a tenth at the end; None constant."""
    if frac < warmup:
        return (frac + 1e-9) / warmup
    if decay == 'wsd':
        return min(1.0, (1 - frac) / 0.4)
    if decay == 'linear':
        return 1 - frac
    if decay == 'cosine':
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (frac - warmup) / (1 - warmup)))
    return 1.0


def get_lr(it, cfg):
    """gpt.py's: linear warmup for warmup_iters steps, then constant; with lr_decay a linear decay to zero over the
    last 40% of max_iters (warmup-stable-decay, which ended below a cosine decay in EX4's speedrun)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    return cfg.learning_rate * factor(it / max(1, cfg.max_iters), decay='wsd' if cfg.lr_decay else None)


def cosine(it, cfg):
    """EX2's addition (measured with it): linear warmup for warmup_iters steps, then with lr_decay a cosine decay
    to a tenth by max_iters."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    frac = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters)
    return cfg.learning_rate * factor(frac, decay='cosine' if cfg.lr_decay else None)
