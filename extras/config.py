"""The settings: a script's top lines (`name = value`, and gpt.py's `name = A if gpu else B`), `--name=value`
on the command line, each checked before anything is written, and the lines that say which values run."""
import argparse
import ast
import math
import os

import torch


class SettingsParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (what is wrong, and where to look), exit code 2."""
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; --help lists every setting\n")


def true_or_false(s):
    """A boolean setting from the command line: True or False."""
    return ('false', 'true').index(s.lower()) == 1  # anything else: argparse reports a ValueError


def script_settings(path):
    """The settings of the script at path: each top-level `name = value` whose name is lower case and whose value
    is a number, a string, True, False or None, or two such values as `A if gpu else B` (the lecture's, for an
    NVIDIA GPU, and the CPU's, as gpt.py's top lines give them): {name: (comment, (A, B) or None)}."""
    with open(path, encoding='utf-8') as f:
        source = f.read()
    lines, found = source.splitlines(), {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        two = isinstance(value, ast.IfExp) and isinstance(value.test, ast.Name) and value.test.id == 'gpu'
        try:  # a computed value (a call, a dict) is no setting: literal_eval raises ValueError
            pair = (ast.literal_eval(value.body), ast.literal_eval(value.orelse)) if two else None
            if not two:
                ast.literal_eval(value)
        except ValueError:
            continue
        if name.islower() and not name.startswith('_') and name != 'gpu':  # gpu: the condition, not a setting
            rest = lines[node.end_lineno - 1][node.end_col_offset:].strip()
            found[name] = (rest[1:].strip() if rest.startswith('#') else '', pair)
    return found


def parse_settings(path, values, argv=None, description=None):
    """The script at path's settings (script_settings) with their current values, and --name=value for each:
    (parser, defaults, the values given on the command line)."""
    found = script_settings(path)
    defaults = {name: values[name] for name in found}
    pairs = {name: pair for name, (_, pair) in found.items() if pair}
    p = SettingsParser(prog=os.path.basename(path), description=description, allow_abbrev=False)
    for name, value in defaults.items():
        shown = f'lecture: {pairs[name][0]!r}, CPU: {pairs[name][1]!r}' if name in pairs else f'default: {value!r}'
        kind = dict(type=true_or_false, nargs='?', const=True) if isinstance(value, bool) else \
            dict(type=int if value is None else type(value))  # None: an int setting that is off by default
        comment = found[name][0]
        help = (f'{comment} ({shown})' if comment else f'({shown})').replace('%', '%%')  # argparse's % formatting
        p.add_argument(f'--{name}', metavar='bool' if isinstance(value, bool) else kind['type'].__name__,
                       help=help, **kind)
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    return p, defaults, given


def torch_devices():
    """PyTorch's devices, in the order 'auto' tries them: {name: whether it is available here}."""
    return {'cuda': torch.cuda.is_available(), 'mps': torch.backends.mps.is_available(), 'cpu': True}


def choose_device(name, parser, available=None):
    """The device called name; 'auto': the first available one of available (None: torch_devices())."""
    available = torch_devices() if available is None else available
    name = next(d for d, ok in available.items() if ok) if name == 'auto' else name
    if not available.get(name):
        parser.error(f"device {name!r} is not available here: use --device=auto or --device=cpu")
    return name


def parse_config(argv, values, devices=None):
    """gpt.py's settings (values: its globals, `globals()` there or `vars(gpt)`): its top lines, the lecture's or
    the CPU's value of each `A if gpu else B` line as --settings chooses (auto: the lecture's on CUDA only), then
    --name=value from the command line; each checked, one line if one is wrong. gpt_mlx.py gives its own devices
    ({name: available}, as torch_devices)."""
    p, defaults, given = parse_settings(values['__file__'], values, argv, values['__doc__'])
    pairs = {name: pair for name, (_, pair) in script_settings(values['__file__']).items() if pair}
    dev = choose_device(given.get('device', defaults['device']), p, devices)
    chosen = given.get('settings', defaults['settings'])
    chosen = ('lecture' if dev == 'cuda' else 'cpu') if chosen == 'auto' else chosen  # a Mac's GPU: a laptop's
    if chosen not in ('lecture', 'cpu'):
        p.error(f"--settings must be auto, lecture or cpu, not {chosen!r}")
    column = {k: pair[chosen == 'cpu'] for k, pair in pairs.items()}
    cfg = argparse.Namespace(**{**defaults, **column, **given, 'device': dev, 'settings': chosen})
    cfg.origin = dict(column=column, file=os.path.basename(values['__file__']),
                      command_line={k: v for k, v in given.items() if k not in ('device', 'settings')})
    check_settings(cfg, p.error)
    return cfg


def describe_settings(cfg, device=None):
    """A run's first lines: the device (device: that line instead, gpt_mlx.py's), then, unless it only samples,
    which values of the `A if gpu else B` lines run, and why."""
    def show(d):
        return ', '.join(f'{k}={v!r}' for k, v in d.items())
    o = cfg.origin
    lines = [device or f"device: {cfg.device} (choose with --device=cuda, mps or cpu)"]
    if cfg.sample:
        return lines[0]
    lines += [f"settings: cpu, the values after `else` at the top of {o['file']}: a model that trains in minutes "
              "(--settings=lecture: the lecture's, hours on a CPU)" if cfg.settings == 'cpu' else
              f"settings: the lecture's, the values before `else` at the top of {o['file']} "
              "(--settings=cpu: smaller ones that train in minutes on a CPU)"]
    lines += [f"  {show({k: v for k, v in o['column'].items() if k not in o['command_line']})}"]
    lines += [f"  from the command line: {show(o['command_line'])}"] if o['command_line'] else []
    return '\n'.join(lines)


def check_settings(cfg, error):
    """Every setting cfg has, checked before anything is downloaded, written, trained or sampled: error(one line)."""
    inf = math.inf
    rules = {name: (lambda v: v >= 1, 'it must be 1 or more')
             for name in ('batch_size', 'block_size', 'eval_interval', 'eval_iters', 'n_embd', 'n_head',
                          'num_samples')}
    rules.update({name: (lambda v: v >= 0, 'it must be 0 or more (0: none, see README)')
                  for name in ('max_iters', 'warmup_iters', 'n_layer', 'max_new_tokens', 'more_chars')})
    rules.update(seed=(lambda v: 0 <= v < 2**63, 'it must be between 0 and 2**63 - 1'),
                 dropout=(lambda v: 0 <= v < 1, 'it is a probability: at least 0 and below 1'),
                 learning_rate=(lambda v: 0 < v < inf, 'it must be a number above 0, like 3e-4'),
                 temperature=(lambda v: 0 < v < inf, 'it must be above 0 (1: as trained; greedy is --top_k=1)'),
                 top_k=(lambda v: v is None or v >= 1, 'it must be 1 or more (1: greedy); leave it out for all'),
                 dtype=(lambda v: v in ('auto', 'bfloat16', 'float16', 'float32'),
                        'use auto, bfloat16, float16 or float32'),
                 input_file=(lambda v: v and not os.path.isdir(v), 'it must name a file, not a folder'),
                 ckpt_path=(lambda v: v and not os.path.isdir(v), 'it must name a file, not a folder'),
                 init_from=(lambda v: not v or os.path.isfile(v), 'it must name a checkpoint file (or be left out)'))
    for name, (ok, allowed) in rules.items():
        if hasattr(cfg, name) and not ok(getattr(cfg, name)):
            error(f"--{name}={getattr(cfg, name)!r} is not allowed: {allowed}")
    if hasattr(cfg, 'n_head') and cfg.n_embd % cfg.n_head:
        error(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head}): each head gets n_embd // n_head")
    if hasattr(cfg, 'input_file') and os.path.exists(cfg.input_file) and not os.access(cfg.input_file, os.R_OK):
        error(f"--input_file={cfg.input_file!r} cannot be read: check its permissions")
    if not hasattr(cfg, 'ckpt_path'):
        return
    folder = os.path.dirname(os.path.abspath(cfg.ckpt_path))
    trains = not getattr(cfg, 'sample', False)  # an exercise has no --sample: it trains
    if trains and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        error(f"--ckpt_path={cfg.ckpt_path!r} is not allowed: its folder {folder} must exist and be writable")
    writes_more = trains and getattr(cfg, 'more_chars', 0)
    if writes_more and (os.path.isdir('more.txt') or not os.access('.', os.W_OK)):
        error("more.txt cannot be written in this folder (training ends by writing it): run from a writable folder")


def script_config(path, values, argv=None, description=None, at_least_1=(), follow=None):
    """The settings of a script other than gpt.py (bigram.py, an exercise): its own top lines and --name=value
    (parse_settings), its device chosen, --seeds (where it has them) as a list of integers, the settings named in
    at_least_1 and those it shares with gpt.py checked: (parser, settings). follow(settings): the values that
    follow from other settings ({name: value}), taken by each one not given on the command line, and printed."""
    p, defaults, given = parse_settings(path, values, argv, description)
    c = argparse.Namespace(**{**defaults, **given})
    if follow:
        taken = {k: v for k, v in follow(c).items() if k not in given and v != defaults[k]}
        if taken:
            print(f"following from the other settings: {', '.join(f'{k}={v!r}' for k, v in taken.items())} "
                  "(give one on the command line to change it)")
        vars(c).update(taken)
    c.device = choose_device(c.device, p)
    if 'seeds' in defaults:
        try:
            c.seeds = [int(s) for s in c.seeds.split(',')]
        except ValueError:
            p.error(f"--seeds must be integers separated by commas, like 1337,42, not {c.seeds!r}")
    for name in at_least_1:
        if getattr(c, name) < 1:
            p.error(f"--{name} must be 1 or more, not {getattr(c, name)}")
    check_settings(c, p.error)  # the settings it shares with gpt.py, by gpt.py's rules
    return p, c
