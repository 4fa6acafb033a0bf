"""What gpt.py needs that the video does not build: a learner following the lecture can skip this file.

gpt.py calls it in a few one-line calls whose names say what they do:
- the settings: gpt.py's top lines (the lecture's or the CPU's column of `A if gpu else B`),
  `--name=value` on the command line, and one-line errors for anything that cannot work
  (`parse_config`, `run`);
- the data: tiny Shakespeare downloaded and checked, any text encoded once into a memory-mapped cache
  beside it, so that a text of any size fits (`load_text`);
- the training run (`Training`): --init_from, torch.compile, torchrun, mixed precision and float16's
  loss scaling, the learning-rate schedule, timing and tokens/s, the best checkpoint, --resume after a
  crash, the divergence check and Ctrl-C;
- sampling that streams: the model's own generate called a token at a time, printed as they come, and
  more.txt.
All of a run's state lives in its `Training` object."""
import argparse
import ast
import codecs
import contextlib
import gc
import hashlib
import json
import math
import mmap
import os
import signal
import sys
import tempfile
import time

import numpy as np
import requests
import torch

DATA_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
DATA_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'

class UserError(Exception):
    """A mistake in the input or settings: printed as one line, exit code 1."""


# ----------------------------------------------------------------------------- settings
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


def parse_config(argv=None, values=None, devices=None):
    """gpt.py's settings (values: its globals; None: the gpt module's): its top lines, the lecture's or the CPU's
    value of each `A if gpu else B` line as --settings chooses (auto: the lecture's on CUDA only), then
    --name=value from the command line; each checked, one line if one is wrong. gpt_mlx.py gives its own devices
    ({name: available}, as torch_devices)."""
    if values is None:
        import gpt
        values = vars(gpt)
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


def script_config(path, values, argv=None, description=None):
    """The settings of another script (bigram.py, the exercises): its top lines and --name=value, its device
    chosen, and the settings it shares with gpt.py checked by gpt.py's rules; one line if one is wrong."""
    p, defaults, given = parse_settings(path, values, argv, description)
    cfg = argparse.Namespace(**{**defaults, **given})
    if 'device' in defaults:
        cfg.device = choose_device(cfg.device, p)
    check_settings(cfg, p.error)
    return cfg


def describe_settings(cfg):
    """The lines that say which values of the `A if gpu else B` lines run, and why."""
    def show(d):
        return ', '.join(f'{k}={v!r}' for k, v in d.items())
    o = cfg.origin
    lines = [f"settings: cpu, the values after `else` at the top of {o['file']}: a model that trains in minutes "
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
    if not cfg.sample and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        error(f"--ckpt_path={cfg.ckpt_path!r} is not allowed: its folder {folder} must exist and be writable")
    writes_more = not cfg.sample and getattr(cfg, 'more_chars', 1)
    if writes_more and (os.path.isdir('more.txt') or not os.access('.', os.W_OK)):
        error("more.txt cannot be written in this folder (training ends by writing it): run from a writable folder")


def run(main):
    """Run a script's main: a UserError ends it with a one-line message and exit code 1, no traceback."""
    if hasattr(sys.stdout, 'reconfigure'):  # a console that cannot show a character (Windows' cp1252) shows '?'
        sys.stdout.reconfigure(errors='replace')
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl-Break stops a run as Ctrl-C does (saving first while training)
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C outside training: stop quietly
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError too
        if not isinstance(e, MemoryError) and 'memory' not in str(e):
            raise
        print("error: out of memory: use a smaller --batch_size, --block_size, --n_embd or --n_layer", file=sys.stderr)
        sys.exit(1)


# ----------------------------------------------------------------------------- the data
def save_atomic(path, write):
    """Write a file through a temporary file and a rename, so it is never left half-written; Ctrl-C waits for it."""
    with ctrl_c_held():
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp-')
        try:
            with os.fdopen(fd, 'wb') as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            os.remove(tmp)
            raise


@contextlib.contextmanager
def ctrl_c_held():
    """Hold Ctrl-C (and Windows' Ctrl-Break) until the block ends, then act on it. A KeyboardInterrupt inside
    torch.save turns into a RuntimeError ("unexpected pos") or even a C++ abort: Ctrl-C just after an evaluation
    line, while the checkpoints were written, ended a run with a traceback instead of its message."""
    names = [name for name in ('SIGINT', 'SIGBREAK') if hasattr(signal, name)]
    held = []
    try:
        old = {name: signal.signal(getattr(signal, name), lambda *a: held.append(a)) for name in names}
    except ValueError:  # not the main thread: signals go to the main thread anyway
        yield
        return
    try:
        yield
    finally:
        for name, handler in old.items():
            signal.signal(getattr(signal, name), handler)
    if held and callable(old['SIGINT']):
        old['SIGINT'](*held[0])  # Python's own handler raises KeyboardInterrupt here, after the block


def download(path):
    """Download tiny Shakespeare to path, check its SHA-256, and write it atomically."""
    url = DATA_URL
    print(f"downloading {url} to {path}")
    try:
        r = requests.get(url, timeout=30)
        r.raise_for_status()
    except requests.RequestException as e:
        raise UserError(f"could not download {url} ({type(e).__name__}); offline? "
                        f"Download that file by hand and save it as {path}") from None
    if hashlib.sha256(r.content).hexdigest() != DATA_SHA256:
        raise UserError(f"the file from {url} has the wrong SHA-256, so it was not saved; try again, "
                        f"or download it by hand and save it as {path}")
    save_atomic(path, lambda f: f.write(r.content))


def load_text(path, block_size, need=None):
    """The vocabulary (every character in the text at path, sorted) and the text as their ids, (N,), checked before
    anything is written: enough text for block_size in each split (90% train, 10% val), and the vocabulary need if
    given (fine-tuning, resuming). A missing input.txt is downloaded first: tiny Shakespeare."""
    if not os.path.exists(path):
        if os.path.basename(path) != 'input.txt':
            raise UserError(f"no such file: {path}")
        download(path)

    def check(chars, length):
        n = int(0.9 * length)
        if min(n, length - n) <= block_size:
            raise UserError(f"{path} has {length} characters, too few for block_size {block_size}: each split "
                            f"(90% train, 10% val) needs more than {block_size}; use more text or a smaller "
                            "--block_size")
        if need is not None and list(chars) != list(need):
            raise UserError(f"{path} has other characters than the checkpoint was trained on: fine-tuning and "
                            "resuming need the same ones")
    return encode_file(path, check=check)


def read_text(path, block_size):
    """The text at path as one string, the lecture's way (bigram.py), after load_text's download and checks."""
    load_text(path, block_size)
    with open(path, encoding='utf-8') as f:
        return f.read()


CACHE_MAGIC = b'gpt.py character cache 1\n'


def encode_file(path, chunk_bytes=2**24, check=None):
    """The vocabulary of the text at path and its ids, memory-mapped from a cache rebuilt when the text changes:
    path + '.cache' (in the temp folder if path's folder is read-only), a header (the text's size, mtime, a hash of
    its ends; the vocabulary), then 1 byte an id (2 above 256 characters). Building it reads the text in chunks,
    never whole: once for the vocabulary, which checks the UTF-8, then check(chars, length) if given, before
    anything is written, and once to write the ids. The lecture: chars = sorted(set(text)); encode(text)."""
    cache = path + '.cache'
    if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        name = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
        cache = os.path.join(tempfile.gettempdir(), f"gpt-{name}.cache")
    source = fingerprint(path)
    header, start = read_cache_header(cache)
    if header is None or header['source'] != source:  # no cache yet, or the text changed since: encode it
        if not source['size']:
            raise UserError(f"{path} is empty: train on a file with some text in it")
        seen, length = np.zeros(0x110000, dtype=bool), 0  # which code points occur, how many characters
        for ids in code_points(path, chunk_bytes):  # pass 1
            seen[ids], length = True, length + len(ids)
        chars = ''.join(map(chr, np.flatnonzero(seen)))  # sorted(set(text))
        if check:
            check(chars, length)
        header = dict(source=source, chars=chars, dtype='uint8' if len(chars) <= 256 else 'uint16', length=length)
        lut = np.zeros(0x110000, dtype=header['dtype'])  # code point -> id
        lut[list(map(ord, chars))] = np.arange(len(chars))
        head = json.dumps(header).encode()

        def write(f):
            f.write(CACHE_MAGIC + len(head).to_bytes(8, 'little') + head)
            for ids in code_points(path, chunk_bytes):  # pass 2
                f.write(lut[ids].tobytes())
        try:
            save_atomic(cache, write)
        except PermissionError:  # Windows: the old cache is still mapped by this process and cannot be replaced
            ids = np.concatenate([lut[ids] for ids in code_points(path, chunk_bytes)])
            return list(chars), torch.from_numpy(ids)
        start = len(CACHE_MAGIC) + 8 + len(head)
    elif check:
        check(header['chars'], header['length'])
    with open(cache, 'rb') as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # copy on write: the file itself never changes
    if hasattr(mapped, 'madvise') and hasattr(mmap, 'MADV_RANDOM'):  # batches read a few bytes at random places:
        mapped.madvise(mmap.MADV_RANDOM)  # read only those pages, none ahead (Windows has no madvise)
    return list(header['chars']), torch.from_numpy(np.frombuffer(mapped, header['dtype'], header['length'], start))


def fingerprint(path):
    """Size, modification time and a hash of the first and last 64 KiB: what tells that a text changed."""
    with open(path, 'rb') as f:
        st = os.fstat(f.fileno())
        ends = f.read(2**16)
        f.seek(max(0, st.st_size - 2**16))
        ends += f.read()
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns, ends=hashlib.sha256(ends).hexdigest())


def read_cache_header(cache):
    """The header of a complete cache file and where its ids start, or (None, 0)."""
    try:
        with open(cache, 'rb') as f:
            if f.read(len(CACHE_MAGIC)) != CACHE_MAGIC:
                return None, 0
            head = f.read(int.from_bytes(f.read(8), 'little'))
            header, start = json.loads(head), len(CACHE_MAGIC) + 8 + len(head)
            complete = os.fstat(f.fileno()).st_size == start + header['length'] * np.dtype(header['dtype']).itemsize
            return (header, start) if complete else (None, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0


def code_points(path, chunk_bytes):
    """The text at path as arrays of Unicode code points, chunk by chunk; a UserError at the first byte that is
    not UTF-8."""
    decoder = codecs.getincrementaldecoder('utf-8')()
    offset = 0
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk
            if chunk and chunk.isascii() and not pending:  # the common case, 5x faster: each byte is its code point
                offset += len(chunk)
                yield np.frombuffer(chunk, dtype=np.uint8)
                continue
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise UserError(f"{path} is not UTF-8 text (bad byte at offset {offset - pending + e.start}): "
                                "save it as UTF-8") from None
            offset += len(chunk)
            if text:
                yield np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
            if not chunk:
                return


# ----------------------------------------------------------------------------- precision and speed
def amp_dtype(device, dtype='auto'):
    """The precision of autocast: as given, or 'auto': bfloat16 where the hardware has it natively (CUDA compute
    capability 8.0 and up, CPUs with AVX512-BF16), float16 on older GPUs (Colab's T4, V100, P100), else float32."""
    if dtype != 'auto':
        return dtype
    if device == 'cuda':
        return 'bfloat16' if torch.cuda.get_device_capability()[0] >= 8 else 'float16'
    native_bf16 = getattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)()
    return 'bfloat16' if device == 'cpu' and native_bf16 else 'float32'


def autocast(device, dtype='auto'):
    """Mixed precision in amp_dtype(device, dtype): matmuls in 16 bits where that is chosen, else plain float32."""
    dtype = amp_dtype(device, dtype)
    return contextlib.nullcontext() if dtype == 'float32' else torch.autocast(device, dtype=getattr(torch, dtype))


def try_compile(model, batch, device, dtype='auto'):
    """torch.compile(model), tried on one batch: where compiling fails, plain PyTorch runs instead."""
    try:
        fast = torch.compile(model)
        with autocast(device, dtype):
            fast(*batch)
        return fast
    except Exception as e:
        print(f"torch.compile failed ({type(e).__name__}); training without it (--compile=False skips trying)")
        return model


def get_lr(it, cfg):
    """Linear warmup for warmup_iters steps, then constant; with lr_decay, a linear decay to zero over the last 40%
    of max_iters (warmup-stable-decay, which ended below a cosine decay in EX4's speedrun)."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    left = (cfg.max_iters - it) / max(1, cfg.max_iters)  # the share of the run still to come
    return cfg.learning_rate * min(1.0, left / 0.4) if cfg.lr_decay else cfg.learning_rate


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


# ----------------------------------------------------------------------------- the start, torchrun
def start(cfg):
    """Print the device and where the settings came from; TF32 matmuls on CUDA. Under `torchrun
    --nproc_per_node=N gpt.py`, join the N processes (NCCL on GPUs, gloo on CPUs), one GPU each, and only rank 0
    prints. Returns this process's rank (0 when run as `python gpt.py`)."""
    rank, world = 0, 1
    if 'RANK' in os.environ:
        if cfg.device == 'cuda':
            torch.cuda.set_device(int(os.environ['LOCAL_RANK']))  # 'cuda' is now this process's GPU
        torch.distributed.init_process_group('nccl' if cfg.device == 'cuda' else 'gloo')
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if rank:
            sys.stdout = open(os.devnull, 'w')
    processes = f"; {world} processes" if world > 1 else ""
    print(f"device: {cfg.device} (choose with --device=cuda, mps or cpu){processes}")
    if not cfg.sample:
        print(describe_settings(cfg))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls on CUDA
    return rank


def stop_distributed():
    """Under torchrun, leave the process group together. DistributedDataParallel's last gloo work is freed first:
    a process that exits while it is still held can abort ('terminate called without an active exception')."""
    if torch.distributed.is_initialized():
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- the training run
class Training:
    """What gpt.py's training loop adds to the lecture's, and all of its state: the model as it trains (compiled,
    and under torchrun averaging gradients), the float16 loss scale, the step to start from, the time and tokens
    since the last report, the best val loss and the history of evaluations. A `with` block: on Ctrl-C the best
    model so far is already saved, and the run stops saying so; at the end, the summary."""
    def __init__(self, cfg, model, optimizer, chars):
        self.cfg, self.raw, self.optimizer, self.chars = cfg, model, optimizer, chars
        self.rank, self.world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
            if torch.distributed.is_initialized() else (0, 1)
        if cfg.init_from:  # fine-tuning (the video's EX3): start from a trained model's weights
            init_weights(model, cfg.init_from, chars)
        model.to(cfg.device)
        print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {len(chars)} characters in the vocabulary")
        fp16 = amp_dtype(cfg.device, cfg.dtype) == 'float16'  # its small range needs the loss scaled (bfloat16's not)
        self.scaler = torch.amp.GradScaler(cfg.device, enabled=fp16)
        self.start, self.best, self.history = load_resume(cfg, model, optimizer, chars, self.scaler) \
            if cfg.resume else (0, float('inf'), [])
        self.model = model
        if cfg.compile:
            dummy = torch.zeros((cfg.batch_size, cfg.block_size), dtype=torch.long, device=cfg.device)
            self.model = try_compile(model, (dummy, dummy), cfg.device, cfg.dtype)
        if self.world > 1:  # each process computes its share of the batch; backward averages the gradients
            self.model = torch.nn.parallel.DistributedDataParallel(self.model)
        self.tokens, self.eval_s, self.it = 0, 0.0, self.start

    def __enter__(self):
        self.began = self.tick = self.stepped = time.time()
        return self

    def steps(self):
        """The steps: 0 (or --resume's) to max_iters; the last one evaluates after the last update."""
        for self.it in range(self.start, self.cfg.max_iters + 1):
            yield self.it

    def autocast(self):
        """Mixed precision: bfloat16 where the hardware has it, float16 on older GPUs, else float32."""
        return autocast(self.cfg.device, self.cfg.dtype)

    def share(self, batch):
        """This process's share of a batch drawn world times as large (under torchrun; all of it otherwise)."""
        return [t.chunk(self.world)[self.rank] for t in batch]

    def backward(self, loss):
        """loss.backward(); in float16 the loss scaled up first, so that small gradients survive."""
        self.scaler.scale(loss).backward()

    def step(self, it):
        """optimizer.step() at step it's learning rate (get_lr); in float16 on unscaled gradients, skipped if they
        overflowed."""
        for group in self.optimizer.param_groups:
            group['lr'] = get_lr(it, self.cfg)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.tokens += self.cfg.batch_size * self.cfg.block_size * self.world
        self.stepped = time.time()

    def report(self, it, losses):
        """Print the losses with the time and the tokens/s of the steps since the last report, keep the best model
        and the state for --resume (rank 0); stop with one line if training diverged."""
        t = time.time()
        if not all(map(math.isfinite, losses.values())):
            raise UserError(f"the loss became {losses['train']} by step {it}: training diverged; "
                            "try a smaller --learning_rate")
        if self.rank == 0:
            # steps are timed to the last one's end (on a GPU, to when it was queued: a few steps early at most)
            speed = f", {self.tokens / (self.stepped - self.tick):,.0f} tokens/s" if self.tokens else ""
            self.history.append((it, round(t - self.began, 3), losses['train'], losses['val']))
            if losses['val'] < self.best:
                self.best = losses['val']
                save_checkpoint(self.cfg.ckpt_path, self.raw, self.chars, self.cfg, it, self.best, self.history)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                  f"{t - self.began:.1f}s{speed}", flush=True)
            save_checkpoint(resume_path(self.cfg.ckpt_path), self.raw, self.chars, self.cfg, it, self.best,
                            self.history, optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                            rng=torch.get_rng_state(),
                            cuda_rng=torch.cuda.get_rng_state() if self.cfg.device == 'cuda' else None)
        self.tokens, self.tick = 0, time.time()
        self.eval_s += self.tick - self.stepped

    def __exit__(self, kind, error, traceback):
        cfg = self.cfg
        if kind is KeyboardInterrupt:  # Ctrl-C: the best model is saved at every evaluation; stop here
            if self.rank == 0:
                print(f"\ninterrupted at step {self.it}: {cfg.ckpt_path} holds the best model so far (val loss "
                      f"{self.best:.4f}); sample from it with `python gpt.py --sample`, or continue from the last "
                      "evaluation with the same command and --resume")
            raise SystemExit(130)
        if kind is None and self.rank == 0:
            os.remove(resume_path(cfg.ckpt_path))  # the run is complete: nothing left to resume
            best = torch.load(cfg.ckpt_path, weights_only=True)  # the best model keeps the whole run's history
            save_atomic(cfg.ckpt_path, lambda f: torch.save({**best, 'history': self.history}, f))
            total = time.time() - self.began
            print(f"trained in {total:.1f}s ({self.eval_s / total:.0%} of it evaluating); peak memory "
                  f"{peak_memory(cfg.device)}; best val loss {self.best:.4f}, saved to {cfg.ckpt_path}")
        return False


# ----------------------------------------------------------------------------- checkpoints and --resume
def save_checkpoint(path, model, chars, cfg, step, val_loss, history=(), **more):
    """Save weights (model's state_dict, or that dict itself: gpt_mlx.py's), vocabulary, settings (sizes among them),
    step, val loss, history (step, s, train, val), atomically."""
    config = {k: v for k, v in vars(cfg).items() if k != 'origin'}
    weights = model if isinstance(model, dict) else model.state_dict()
    ckpt = dict(model=weights, chars=chars, config=config, step=step, val_loss=val_loss, history=list(history),
                **more)
    save_atomic(path, lambda f: torch.save(ckpt, f))


def load_checkpoint(path, device, flash=False, build=None):
    """The model saved at path (built by build: gpt.py's GPTLanguageModel) and the checkpoint, or a clear error."""
    if build is None:
        from gpt import GPTLanguageModel as build
    ckpt = read_checkpoint(path, device)
    try:
        c = ckpt['config']
        model = build(len(ckpt['chars']), c['n_embd'], c['n_head'], c['n_layer'], c['block_size'], 0.0, flash)
        model.load_state_dict(ckpt['model'])
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint this gpt.py can load ({type(e).__name__}): train a new one")
    return model.to(device), ckpt


def read_checkpoint(path, device='cpu', script='gpt.py'):
    """The checkpoint at path as saved by save_checkpoint (by gpt.py or gpt_mlx.py), or a one-line error."""
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}: train one first with `python {script}`, or set --ckpt_path")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        ckpt['config']['n_embd'], ckpt['chars'], ckpt['model']  # what both scripts read: a KeyError if missing
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint this {script} can load ({type(e).__name__}): train a new one")
    return ckpt


def init_weights(model, path, chars):
    """Copy the weights of the checkpoint at path into model, to fine-tune it: the same characters and sizes."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        saved_chars, weights = ckpt['chars'], ckpt['model']
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint this gpt.py can load ({type(e).__name__}): train a new one")
    if saved_chars != chars:
        raise UserError(f"{path} was trained on other characters than --input_file has: fine-tuning needs the same")
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise UserError(f"{path} holds a model of other sizes: fine-tune with its --n_embd, --n_head, --n_layer and "
                        "--block_size") from None


def resume_path(ckpt_path):
    """Where the state for --resume is kept, beside the checkpoint: ckpt.pt -> ckpt.resume.pt."""
    root, ext = os.path.splitext(ckpt_path)
    return f"{root}.resume{ext or '.pt'}"


def load_resume(cfg, model, optimizer, chars, scaler=None):
    """Put back the state of the unfinished run at cfg.ckpt_path; returns its step, best val loss and history."""
    path = resume_path(cfg.ckpt_path)
    if not os.path.exists(path):
        raise UserError(f"nothing to resume: no {path} (it is kept while a run is unfinished); "
                        "start a run without --resume")
    try:
        state = torch.load(path, map_location=cfg.device, weights_only=True)
        runtime = ('settings', 'device', 'compile', 'flash', 'dtype', 'sample', 'resume', 'prompt', 'max_new_tokens',
                   'temperature', 'top_k', 'num_samples', 'more_chars')  # may change between the stop and the resume
        differ = [f"--{k}={v!r}" for k, v in state['config'].items() if k not in runtime and getattr(cfg, k, None) != v]
        if not differ and state['chars'] == chars:
            model.load_state_dict(state['model'])
            optimizer.load_state_dict(state['optimizer'])
            if scaler is not None and state.get('scaler'):  # float16's loss scale, as it had grown or shrunk
                scaler.load_state_dict(state['scaler'])
            torch.set_rng_state(state['rng'].cpu())
            if state['cuda_rng'] is not None and cfg.device == 'cuda':
                torch.cuda.set_rng_state(state['cuda_rng'].cpu())
    except Exception as e:
        raise UserError(f"{path} is not a state this gpt.py can resume ({type(e).__name__}): start a new run") from None
    if differ or state['chars'] != chars:
        raise UserError(f"the run at {path} had other settings or text: resume with the same ones "
                        f"({' '.join(differ) or 'its text had other characters'})")
    print(f"resuming {path} at step {state['step']} (best val loss so far {state['val_loss']:.4f})")
    return state['step'], state['val_loss'], state['history']


def checkpoint_chars(cfg):
    """The vocabulary that --init_from's checkpoint, or --resume's state, needs the text to have (None: any)."""
    path = cfg.init_from or (resume_path(cfg.ckpt_path) if cfg.resume else '')
    if not path or not os.path.isfile(path):
        return None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)['chars']
    except Exception:
        return None  # not a checkpoint: said in one line when it is loaded


# ----------------------------------------------------------------------------- sampling
@torch.inference_mode()
def sample_stream(model, idx, max_new_tokens, temperature=1.0, top_k=None):
    """Yield max_new_tokens tokens (B,) continuing idx (B,T), one at a time, so that they can be printed as they
    come: each is model.generate(idx, 1, temperature, top_k), the model's own sampling (gpt.py's generate), in
    eval mode (dropout off). An edit of generate changes what this yields."""
    was_training = model.training
    model.eval()
    for _ in range(max_new_tokens):
        idx = model.generate(idx, 1, temperature, top_k)
        yield idx[:, -1]
    model.train(was_training)


def show_samples(tokens, context, decode):
    """Print each row of context with its sampled continuation; one sample appears character by character."""
    if len(context) > 1:
        rows = context.tolist()  # lists, not tensors: gpt_mlx.py's arrays are printed here too
        for t in tokens:
            for row, token in zip(rows, t.tolist()):
                row.append(token)
        return print(''.join(f"{'-' * 30} sample {i + 1} of {len(rows)}\n{decode(r)}\n" for i, r in enumerate(rows)),
                     end='')
    print(decode(context[0].tolist()), end='', flush=True)
    for t in tokens:
        print(decode(t.tolist()), end='', flush=True)
    print()


def save_more(path, tokens, context, decode, n):
    """Write context and its n sampled characters to path atomically; on a terminal, a progress line meanwhile."""
    ids, tty = context.tolist(), sys.stdout.isatty()
    for i, t in enumerate(tokens, 1):
        ids += t.tolist()
        if tty and i % 500 == 0:
            print(f"\rwriting {path}: {i:,} of {n:,} characters", end='', flush=True)
    save_atomic(path, lambda f: f.write(decode(ids).encode('utf-8')))
    print(('\r' if tty else '') + f"wrote {n:,} more characters to {path}".ljust(50 if tty else 0))


def sample(cfg, build, tokenizer):
    """After training (or with --sample): load the best checkpoint, print num_samples continuations of the prompt
    as they are sampled, and after training write more_chars more characters to more.txt, as the lecture does."""
    model, ckpt = load_checkpoint(cfg.ckpt_path, cfg.device, cfg.flash, build)
    encode, decode = tokenizer(ckpt['chars'])
    unknown = sorted(set(cfg.prompt) - set(ckpt['chars']))
    if unknown:
        raise UserError(f"the prompt has characters the model never saw: {''.join(unknown)!r}; leave them out")
    print(f"sampling from {cfg.ckpt_path} (step {ckpt['step']}, val loss {ckpt['val_loss']:.4f}):")
    context = torch.tensor([encode(cfg.prompt) or [0]] * cfg.num_samples, device=cfg.device)  # no prompt: token 0
    show_samples(sample_stream(model, context, cfg.max_new_tokens, cfg.temperature, cfg.top_k), context, decode)
    if not cfg.sample and cfg.more_chars:  # as in the lecture: 10,000 more characters to a file
        save_more('more.txt', sample_stream(model, context[:1], cfg.more_chars, cfg.temperature, cfg.top_k),
                  context[0], decode, cfg.more_chars)
