"""A training run's clock and what it prints: the evaluation lines (with tokens/s since the last), a progress line
between them at least every 10 seconds (step, time a step, time left; on a terminal it overwrites itself), the
message after Ctrl-C, and the summary at the end. Under torchrun only rank 0 prints."""
import math
import sys
import time

import torch

from extras.errors import UserError

EVERY = 10.0  # seconds between progress lines


class Clock:
    """The clock of one training run from step start to cfg.max_iters. history: the list of evaluations so far
    (--resume's), as (step, seconds, train loss, val loss), which report() extends. A `with` block: on Ctrl-C it
    says where the best model so far is and how to go on, and exits with code 130."""

    def __init__(self, cfg, start=0, history=None, rank=0, world=1):
        self.cfg, self.rank, self.world = cfg, rank, world
        self.history = [] if history is None else history
        self.began = self.tick = self.stepped_at = self.shown = time.time()
        self.tokens, self.steps, self.eval_s, self.last_eval_s = 0, 0, 0.0, 0.0
        self.it, self.line = start, ''

    def report(self, it, losses):
        """An evaluation's line: the losses, the seconds since the start, the tokens/s since the last evaluation.
        Losses that are not finite stop the run with one line: training diverged."""
        if not all(map(math.isfinite, losses.values())):
            raise UserError(f"the loss became {losses['train']} by step {it}: training diverged; "
                            "try a smaller --learning_rate")
        t = time.time()
        # steps are timed to the last one's end (on a GPU, to when it was queued: a few steps early at most)
        speed = f", {self.tokens / (self.stepped_at - self.tick):,.0f} tokens/s" if self.tokens else ""
        self.history.append((it, round(t - self.began, 3), losses['train'], losses['val']))
        self.say(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                 f"{t - self.began:.1f}s{speed}")
        self.last_eval_s = t - self.stepped_at if self.steps else t - self.tick
        self.eval_s += self.last_eval_s
        self.tokens, self.steps, self.tick = 0, 0, time.time()

    def stepped(self, it):
        """After step it: count its tokens; every EVERY seconds a progress line."""
        self.it, self.stepped_at = it + 1, time.time()
        self.steps += 1
        self.tokens += self.cfg.batch_size * self.cfg.block_size * self.world
        if self.stepped_at - self.shown < EVERY or self.rank:
            return
        per_step = (self.stepped_at - self.tick) / self.steps
        left = self.cfg.max_iters - self.it
        evals = left // self.cfg.eval_interval + 1  # the evaluations still to come, the last one's included
        seconds = per_step * left + evals * self.last_eval_s
        self.say(f"step {self.it} of {self.cfg.max_iters}: {per_step * 1000:,.0f} ms a step, "
                 f"{clock(seconds)} left", progress=True)

    def say(self, line, progress=False):
        """Print line; a progress line on a terminal is overwritten by the next line."""
        self.shown = time.time()
        if self.rank:
            return
        tty = sys.stdout.isatty()
        wipe = '\r' + ' ' * len(self.line) + '\r' if self.line else ''
        print(wipe + line, end='' if progress and tty else '\n', flush=True)
        self.line = line if progress and tty else ''

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not KeyboardInterrupt:
            return False
        if self.history and not self.rank:  # Ctrl-C after an evaluation: its best model is saved
            best = min(h[3] for h in self.history)
            resume = ", or continue from the last evaluation with the same command and --resume" \
                if hasattr(self.cfg, 'resume') else ""
            self.say(f"\ninterrupted at step {self.it}: {self.cfg.ckpt_path} holds the best model so far (val loss "
                     f"{best:.4f}); sample from it with `python gpt.py --sample`{resume}")
        raise SystemExit(130)

    def summary(self, best, memory=None):
        """The run's last line: its time, the share spent evaluating, peak memory (as given, else the process's or
        the GPU's), the best val loss."""
        if self.rank:
            return
        total = time.time() - self.began
        self.say(f"trained in {total:.1f}s ({self.eval_s / total:.0%} of it evaluating); peak memory "
                 f"{memory or peak_memory(self.cfg.device)}; best val loss {best:.4f}, saved to {self.cfg.ckpt_path}")


def clock(seconds):
    """Seconds as a person reads them: 42 s, 3 min 5 s, 1 h 20 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    return f"{s // 60} min {s % 60} s" if s < 3600 else f"{s // 3600} h {s % 3600 // 60} min"


def peak_memory(device):
    """Peak memory: allocated on the GPU with CUDA, else the process's peak resident set where the system tells it."""
    if device == 'cuda':
        return f"{torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB on the GPU"
    try:
        import resource  # Linux and macOS; Windows has no such module
    except ImportError:
        return "not measured on this system"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return f"{rss / (2**20 if sys.platform == 'darwin' else 2**10):,.0f} MiB RSS"
