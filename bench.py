"""Speed report: how fast gpt.py trains and samples on this machine, and what each of its speed levers buys.

`python bench.py` builds gpt.py's own model on gpt.py's data and times gpt.py's training step (forward under
autocast, zero_grad, backward, AdamW) at the lecture's settings and at the CPU settings, the device's own set first.
For each it prints a table: step time, tokens/s, model FLOPs utilisation against the device's data-sheet peak,
peak memory, the share of a run that evaluation at eval_iters 200 takes, and sampling speed (the lecture's
generate, streamed, once the context is full). For the first set, each lever is timed against the settings as
they are, the variants taking turns round after round so that a machine's drift hits all alike: torch.compile on
and off (and its compile time), fused and explicit attention, autocast on and off (EX1's batched heads against the
lecture's one by one: `python exercises/ex1_batched_heads.py`). Any of gpt.py's settings may be given too
(--n_layer=2, --batch_size=8, ...); they apply to every set. Paste the tables into an issue to compare machines."""
import argparse
import contextlib
import datetime
import math
import platform
import subprocess
import sys
import time

import torch

import extras
import gpt

# settings (each can be changed on the command line: --name=value; gpt.py's settings too)
sets = 'auto'          # gpt.py's settings to measure: 'lecture', 'cpu' or both ('cpu,lecture'); auto: both, own first
device = 'auto'        # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
steps = 10             # training steps a variant takes in each round (fewer if round_seconds runs out)
rounds = 3             # rounds, the variants taking turns in each; step times are the rounds' median
round_seconds = 3.0    # at most this long for one variant in one round (at least one step)
levers = 'first'       # which sets get the lever table: 'first', 'all' or 'none'
sample_seconds = 2.0   # how long the sampler runs for the characters/s figure

# Dense data-sheet peaks in TFLOP/s: (bfloat16 or float16 on tensor cores, float32 as gpt.py runs it: TF32 matmuls
# from Ampere on). Apple's GPUs run 16-bit at about their float32 rate. Longer names first: 'H100 PCIe' before 'H100'.
PEAKS = {'H100 PCIe': (756, 378), 'H100': (989, 494), 'H200': (989, 494), 'A100': (312, 156), 'A10': (125, 62.5),
         'L4': (121, 60), 'T4': (65, 8.1), 'V100': (125, 15.7), 'P100': (18.7, 9.3), 'RTX 4090': (165, 82.6),
         'RTX 3090': (71, 35.6), 'M1 Max': (10.4, 10.4), 'M1 Pro': (5.2, 5.2), 'M1': (2.6, 2.6),
         'M2 Max': (13.6, 13.6), 'M2 Pro': (6.8, 6.8), 'M2': (3.6, 3.6)}


def device_name(dev):
    """The accelerator's or the CPU's name, as the system gives it."""
    if dev == 'cuda':
        return torch.cuda.get_device_name()
    if sys.platform == 'darwin':
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(['sysctl', '-n', 'machdep.cpu.brand_string'], capture_output=True, text=True,
                                  timeout=5).stdout.strip() or platform.processor()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    return platform.processor() or 'unknown'


def peak_tflops(dev, name, dtype):
    """The data-sheet peak for this device and precision, or None where it is not in PEAKS (CPUs among them)."""
    if dev == 'cpu':
        return None
    key = next((k for k in sorted(PEAKS, key=len, reverse=True) if k in name), None)
    return key and PEAKS[key][0 if dtype in ('bfloat16', 'float16') else 1]


def flops_per_token(model, block_size):
    """Training FLOPs per token, as nanoGPT counts them: 6 per weight of the matmuls, plus attention's 12 L T C."""
    n = sum(p.numel() for p in model.parameters()) - model.token_embedding_table.weight.numel() \
        - model.position_embedding_table.weight.numel()  # lookups, not matmuls
    return 6 * n + 12 * len(model.blocks) * block_size * model.lm_head.in_features


class Variant:
    """gpt.py's model, AdamW and training step with the levers set one way: compile, flash, dtype."""
    def __init__(self, cfg, vocab, batch, compile, flash, dtype):
        self.cfg, self.batch, self.dtype = cfg, batch, dtype
        self.what = dict(compile=compile, flash=flash, dtype=dtype)
        torch.manual_seed(cfg.seed)
        self.model = gpt.GPTLanguageModel(vocab, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, cfg.dropout,
                                          flash).to(cfg.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate,
                                           fused=cfg.device in ('cuda', 'cpu'))  # as gpt.py's
        fp16 = extras.precision.amp_dtype(cfg.device, dtype) == 'float16'
        self.scaler = torch.amp.GradScaler(cfg.device, enabled=fp16)
        self.fast, self.compile_s, self.failed, self.warm = self.model, None, None, False
        if compile:
            try:
                self.fast = torch.compile(self.model)
                start = time.perf_counter()
                self.step()  # the first step compiles
                self.compile_s = time.perf_counter() - start
            except Exception as e:  # no compiler here, for example: the row says so
                self.failed = f"compile failed ({type(e).__name__})"

    def step(self):
        self.warm = True
        xb, yb = self.batch()
        with extras.precision.autocast(self.cfg.device, self.dtype):
            _, loss = self.fast(xb, yb)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def timed(self, c):
        """Seconds per step over up to c.steps steps, or c.round_seconds, synchronised with the device."""
        sync(self.cfg.device)
        start, n = time.perf_counter(), 0
        while n < c.steps and (n == 0 or time.perf_counter() - start < c.round_seconds):
            self.step()
            n += 1
        sync(self.cfg.device)
        return (time.perf_counter() - start) / n


def sync(dev):
    if dev == 'cuda':
        torch.cuda.synchronize()
    elif dev == 'mps':
        torch.mps.synchronize()


def take_turns(variants, c):
    """Each variant's median seconds per step: a warm-up step each, then c.rounds rounds in rotating order (one round
    where there is one variant: no turns to take)."""
    times = {k: [] for k, v in variants.items() if not v.failed}
    for k in times:
        if not variants[k].warm:
            variants[k].step()
    names = list(times)
    for r in range(c.rounds if len(names) > 1 else 1):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(variants[k].timed(c))
    return {k: sorted(t)[len(t) // 2] for k, t in times.items()}


@torch.no_grad()
def eval_batch_seconds(variant, splits, cfg, n=2):
    """Seconds for one evaluation batch (forward only, dropout off): the lower median of n, after a warm-up."""
    variant.fast.eval()
    times = []
    for k in range(n + 1):
        x, y = gpt.get_batch(splits['val'], cfg.batch_size, cfg.block_size, cfg.device)
        sync(cfg.device)
        start = time.perf_counter()
        with extras.precision.autocast(cfg.device, variant.dtype):
            variant.fast(x, y)
        sync(cfg.device)
        times += [time.perf_counter() - start] if k else []
    variant.fast.train()
    return sorted(times)[(n - 1) // 2]


def chars_per_second(sampler, model, cfg, seconds):
    """Characters per second that sampler(model, context, n) yields, starting from a full context."""
    model.eval()
    context = torch.zeros((1, cfg.block_size), dtype=torch.long, device=cfg.device)
    n, start = 0, time.perf_counter()
    for _ in sampler(model, context):
        n += 1
        if time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start)


def memory(dev):
    if dev == 'cuda':
        return f"{torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB on the GPU (the first variant alone)"
    return f"{extras.progress.peak_memory(dev)} (the whole process, all variants so far)"


def report(cfg, name, c, with_levers):
    """Measure one set of gpt.py's settings and print its tables."""
    chars, splits = gpt.load_data(cfg.input_file, cfg.block_size)
    def batch():
        return gpt.get_batch(splits['train'], cfg.batch_size, cfg.block_size, cfg.device)
    dtype = extras.precision.amp_dtype(cfg.device, cfg.dtype)
    if cfg.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    base = Variant(cfg, len(chars), batch, cfg.compile, cfg.flash, dtype)
    if not (base.failed or base.warm):
        base.step()  # a step before the peak is read
    mem = memory(cfg.device)
    other16 = 'float16' if cfg.device == 'cuda' and dtype == 'float16' else 'bfloat16'
    variants = {'as set': base}
    if with_levers:
        variants.update({
            'compile': Variant(cfg, len(chars), batch, not cfg.compile, cfg.flash, dtype),
            'attention': Variant(cfg, len(chars), batch, cfg.compile, not cfg.flash, dtype),
            'autocast': Variant(cfg, len(chars), batch, cfg.compile, cfg.flash,
                                'float32' if dtype != 'float32' else other16)})
    times = take_turns(variants, c)
    if base.failed:
        times['as set'] = None
    tokens = cfg.batch_size * cfg.block_size
    step = times['as set']
    name_dev = device_name(cfg.device)
    peak = peak_tflops(cfg.device, name_dev, dtype)
    print(f"\n### settings: {name} (n_layer {cfg.n_layer}, n_head {cfg.n_head}, n_embd {cfg.n_embd}, block_size "
          f"{cfg.block_size}, batch_size {cfg.batch_size}); {dtype}, compile {'on' if cfg.compile else 'off'}, "
          f"{'fused' if cfg.flash else 'explicit'} attention, the lecture's heads one by one\n")
    print("| figure | measured |\n| --- | --- |")
    if step is None:
        print(f"| step time | not measured: {base.failed} |")
    else:
        fpt = flops_per_token(base.model, cfg.block_size)
        mfu = f"{fpt * tokens / step / (peak * 1e12):.1%} of {peak:g} TFLOP/s ({dtype})" if peak else \
            f"peak unknown for {name_dev}"
        rounds = f'median of {c.rounds} rounds' if with_levers else 'one round'
        print(f"| step time | {step * 1e3:,.1f} ms ({rounds}) |")
        print(f"| tokens/s | {tokens / step:,.0f} |")
        print(f"| model FLOPs utilisation | {mfu} ({fpt * tokens / step / 1e12:.3g} TFLOP/s achieved, "
              f"{fpt:,} FLOPs a token) |")
        if base.compile_s is not None:
            print(f"| compile time | {base.compile_s:.1f} s (the first step) |")
        e = eval_batch_seconds(base, splits, cfg)
        per_eval = 2 * 200 * e  # both splits
        share = per_eval / (per_eval + cfg.eval_interval * step)
        print(f"| evaluation at eval_iters 200 | {e * 1e3:,.1f} ms a batch: {per_eval:,.1f} s an evaluation, "
              f"{share:.0%} of a run that evaluates every {cfg.eval_interval} steps |")
    print(f"| peak memory | {mem} |")
    speed = chars_per_second(lambda m, ctx: extras.sampling.sample_stream(m, ctx, 10**9), base.model, cfg,
                             c.sample_seconds)
    print(f"| sampling, context full | {speed:,.0f} characters/s (the lecture's generate, streamed) |")
    if not with_levers:
        return
    print("\n| lever | as set | changed to | step time: as set -> changed |\n| --- | --- | --- | --- |")
    def onoff(b):
        return 'on' if b else 'off'
    rows = [('compile', onoff(cfg.compile), onoff(not cfg.compile)),
            ('attention', 'fused' if cfg.flash else 'explicit', 'explicit' if cfg.flash else 'fused'),
            ('autocast', dtype, variants['autocast'].dtype)]
    for lever, was, now in rows:
        v = variants[lever]
        if v.failed or step is None:
            figure = f"not measured: {v.failed or base.failed}"
        else:
            t = times[lever]
            figure = f"{step * 1e3:,.1f} -> {t * 1e3:,.1f} ms ({step / t:.2f}x the speed)"
        if v.compile_s is not None and lever == 'compile':
            now += f" (compiled in {v.compile_s:.1f} s)"
        print(f"| {lever} | {was} | {now} | {figure} |")


def main(argv=None):
    """Measure each set of settings; print where, with what, and when."""
    argv = sys.argv[1:] if argv is None else argv
    own = {'--' + k for k in ('sets', 'device', 'steps', 'rounds', 'round_seconds', 'levers', 'sample_seconds')}
    mine = [a for a in argv if a.split('=')[0] in own or a in ('-h', '--help')]
    p, defaults, given = extras.config.parse_settings(__file__, globals(), mine, __doc__)
    c = argparse.Namespace(**{**defaults, **given})
    c.device = extras.config.choose_device(c.device, p)
    chosen = ['cpu', 'lecture'] if c.device == 'cpu' else ['lecture', 'cpu']
    chosen = chosen if c.sets == 'auto' else c.sets.split(',')
    if not chosen or any(s not in ('lecture', 'cpu') for s in chosen):
        p.error(f"--sets must be lecture, cpu, both separated by a comma, or auto, not {c.sets!r}")
    if c.levers not in ('first', 'all', 'none'):
        p.error(f"--levers must be first, all or none, not {c.levers!r}")
    if c.steps < 1 or c.rounds < 1 or not (0 < c.round_seconds < math.inf and 0 < c.sample_seconds < math.inf):
        p.error("--steps and --rounds must be 1 or more, --round_seconds and --sample_seconds above 0")
    rest = [a for a in argv if a not in mine]
    # every set's settings are checked before any is measured
    cfgs = [extras.config.parse_config([f'--settings={s}', f'--device={c.device}', *rest], vars(gpt)) for s in chosen]
    print(f"## bench.py on {c.device}: {device_name(c.device)}; PyTorch {torch.__version__}, Python "
          f"{platform.python_version()}, {platform.system()}; {datetime.date.today()}")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as gpt.py runs
    for i, (name, cfg) in enumerate(zip(chosen, cfgs)):
        report(cfg, name, c, c.levers == 'all' or (c.levers == 'first' and i == 0))


if __name__ == '__main__':
    extras.errors.run(main)
