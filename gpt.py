"""Let's build GPT: a character-level GPT trained on tiny Shakespeare, in the lecture's order.

`python gpt.py` trains, then samples; `python gpt.py --sample --prompt="ROMEO:"` samples from the saved
checkpoint. Every setting below can be changed on the command line: --name=value. What differs from the
lecture's script: nanoGPT's weight init; the heads of MultiHeadAttention run as one batch (same math,
tests check it); fused attention, bfloat16 (float16 on older GPUs), torch.compile where they help; smaller
CPU settings with lr warmup and decay; the best checkpoint, --resume, --init_from, temperature, top_k and
--num_samples; the text memory-mapped, so it may be any size; torchrun; a sampler that gives generate's
characters faster, as they come. Below the line that ends the lecture: plumbing."""
import argparse
import codecs
import contextlib
import gc
import hashlib
import json
import math
import mmap
import os
import re
import signal
import sys
import tempfile
import time

import numpy as np
import requests
import torch
import torch.nn as nn
from torch.nn import functional as F

# hyperparameters: the lecture's values (10,788,929 parameters; val loss 1.48 on one GPU)
batch_size = 64       # how many independent sequences are processed in parallel
block_size = 256      # maximum context length for predictions
max_iters = 5000      # training steps
eval_interval = 500   # estimate the losses every this many steps
learning_rate = 3e-4  # AdamW's learning rate
warmup_iters = 0      # steps of linear learning-rate warmup
lr_decay = False      # cosine-decay the learning rate to a tenth of it by max_iters
eval_iters = 200      # batches averaged by each loss estimate
n_embd = 384          # embedding dimension
n_head = 6            # attention heads per block (head_size = n_embd // n_head)
n_layer = 6           # transformer blocks
dropout = 0.2         # dropout probability while training
# The lecture's values take half a day on a CPU. There these are used instead: a smaller model that trains
# in under 3 minutes on 2 cores, without compile and the fused attention kernel (slower on the CPU).
cpu_settings = dict(batch_size=16, block_size=64, max_iters=8000, eval_interval=250, learning_rate=3e-3,
                    warmup_iters=50, lr_decay=True, eval_iters=20, n_embd=128, n_head=4, n_layer=2,
                    dropout=0.0, compile=False, flash=False)
# run settings
settings = 'auto'     # 'lecture' or 'cpu' values above; 'auto': cpu on the CPU, else lecture
device = 'auto'       # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
seed = 1337           # random seed: same seed and device, same losses and samples
compile = True        # torch.compile the model (runs without it where that fails)
flash = True          # attention through one fused kernel, F.scaled_dot_product_attention
dtype = 'auto'        # mixed precision: 'bfloat16', 'float16' (with loss scaling) or 'float32'; auto: what is native
input_file = 'input.txt'  # training text (tiny Shakespeare is downloaded if this is missing)
ckpt_path = 'ckpt.pt'     # where the model with the best val loss is saved
sample = False            # only sample from the checkpoint, no training
resume = False            # continue an unfinished run from its last evaluation (give the same settings)
init_from = ''            # fine-tune: start from this checkpoint's weights (same characters and sizes)
prompt = ''               # text the sample continues
max_new_tokens = 500      # characters to print after training, or with --sample
temperature = 1.0         # divides the logits before sampling: below 1 safer, above 1 wilder
top_k = None              # sample only from the top_k likeliest characters (1: greedy); None: from all
num_samples = 1           # independent samples of the prompt, sampled as one batch and printed one after another

# ----------------------------------------------------------------------------- data and tokenizer
def load_data(path, block_size, fetch=False):
    """The text encoded by the character tokenizer and split 90/10 (downloaded first if fetch and missing)."""
    if not os.path.exists(path):
        if not fetch:
            raise UserError(f"no such file: {path}")
        download(path)
    # The lecture: text = open(path).read(); chars = sorted(set(text)); data = torch.tensor(encode(text)). encode_file
    # (below the lecture) gives the same ids from a cache beside the file, memory-mapped: a text of any size fits.
    chars, data = encode_file(path)  # chars: the vocabulary, every character in the text; data: (N,) ids
    n = int(0.9 * len(data))  # first 90% train, rest val
    if min(n, len(data) - n) <= block_size:
        raise UserError(f"{path} has {len(data)} characters, too few for block_size {block_size}: each split "
                        f"(90% train, 10% val) needs more than {block_size}; use more text or a smaller --block_size")
    return chars, {'train': data[:n], 'val': data[n:]}

def tokenizer(chars):
    """The character tokenizer: encode a string to a list of integers, decode the list back."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    return (lambda s: [stoi[c] for c in s]), (lambda ids: ''.join(chars[i] for i in ids))

# ----------------------------------------------------------------------------- batches and the loss estimate
def get_batch(data, batch_size, block_size, device, generator=None):
    """A batch of random chunks: inputs x and targets y, which are x shifted by one."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + block_size] for i in ix]).long()          # (B,T)
    y = torch.stack([data[i + 1:i + block_size + 1] for i in ix]).long()  # (B,T)
    if device == 'cuda':  # pinned memory lets the copy to the GPU overlap with compute
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)

@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device, dtype='auto'):
    """Mean loss over eval_iters batches per split, dropout off; the same batches at every call."""
    model.eval()
    out = {}
    for split, data in splits.items():
        g = torch.Generator().manual_seed(0)  # fixed batches: estimates compare across steps and runs
        losses = torch.zeros(eval_iters, device=device)
        for k in range(eval_iters):
            X, Y = get_batch(data, batch_size, block_size, device, g)
            with autocast(device, dtype):
                losses[k] = model(X, Y)[1]
        out[split] = losses.mean().item()
    model.train()
    return out

# ----------------------------------------------------------------------------- the model
class Head(nn.Module):
    """One head of causal self-attention."""
    def __init__(self, n_embd, head_size, block_size, dropout, flash=False):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.flash = flash

    def forward(self, x):
        return self.attend(self.query(x), self.key(x), self.value(x))  # (B,T,hs)

    def attend(self, q, k, v):
        """Each position's queries against the keys up to it, averaging their values: (...,T,hs) in and out."""
        T = q.shape[-2]
        if self.flash:  # exactly the math below, fused into one kernel (tests check they agree)
            p = self.dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        # affinities, scaled by 1/sqrt(head_size) so softmax stays diffuse at initialisation
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B,T,hs) @ (B,hs,T) -> (B,T,T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # no looking at the future
        wei = F.softmax(wei, dim=-1)  # (B,T,T)
        wei = self.dropout(wei)
        return wei @ v  # (B,T,T) @ (B,T,hs) -> (B,T,hs)

class MultiHeadAttention(nn.Module):
    """Several heads of self-attention in parallel, concatenated and projected."""
    def __init__(self, n_embd, n_head, block_size, dropout, flash=False):
        super().__init__()
        head_size = n_embd // n_head
        self.heads = nn.ModuleList([Head(n_embd, head_size, block_size, dropout, flash) for _ in range(n_head)])
        self.proj = nn.Linear(head_size * n_head, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # torch.cat([h(x) for h in self.heads], dim=-1), batched: one matmul makes every head's query, key
        # and value from their stacked weights, and one attend call runs all heads (tests check both agree)
        B, T, C = x.shape
        w = torch.cat([torch.cat([h.query.weight, h.key.weight, h.value.weight]) for h in self.heads])
        q, k, v = F.linear(x, w).view(B, T, len(self.heads), 3, -1).permute(3, 0, 2, 1, 4)  # (B,nh,T,hs) each
        out = self.heads[0].attend(q, k, v).transpose(1, 2).reshape(B, T, -1)  # (B,T,nh*hs): heads side by side
        return self.dropout(self.proj(out))

class FeedForward(nn.Module):
    """A per-token MLP: expand 4x, ReLU, project back."""
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(),
                                 nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)

class Block(nn.Module):
    """Transformer block: communication (attention) then computation (MLP), pre-LayerNorm, residual."""
    def __init__(self, n_embd, n_head, block_size, dropout, flash=False):
        super().__init__()
        self.sa = MultiHeadAttention(n_embd, n_head, block_size, dropout, flash)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x

class GPTLanguageModel(nn.Module):
    """Token and position embeddings, a stack of blocks, a final LayerNorm and the lm_head."""
    def __init__(self, vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer, block_size=block_size,
                 dropout=dropout, flash=False):
        super().__init__()
        self.block_size = block_size
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout, flash) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        """Small normal weights (std 0.02) and zero biases, as in nanoGPT."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        tok_emb = self.token_embedding_table(idx)  # (B,T,C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T,C)
        x = tok_emb + pos_emb  # (B,T,C)
        x = self.blocks(x)     # (B,T,C)
        x = self.ln_f(x)       # (B,T,C)
        logits = self.lm_head(x)  # (B,T,vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T), ignore_index=-1)  # -1: no target here
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B,T) by max_new_tokens sampled tokens, in eval mode (dropout off); top_k=1 is greedy."""
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.block_size:])  # crop the context to the last block_size tokens
            logits = logits[:, -1, :] / temperature  # (B,vocab_size) for the last time step
            if top_k is not None:  # every token less likely than the k-th likeliest gets probability 0
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]  # (B,1)
                logits = logits.masked_fill(logits < kth, float('-inf'))
            probs = F.softmax(logits, dim=-1)  # (B,vocab_size)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)  # (B,T+1)
        self.train(was_training)
        return idx

# ----------------------------------------------------------------------------- training
def get_lr(it, cfg):
    """Linear warmup for warmup_iters steps, then constant, or cosine decay to a tenth if lr_decay."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / cfg.warmup_iters
    progress = (it - cfg.warmup_iters) / max(1, cfg.max_iters - cfg.warmup_iters) if cfg.lr_decay else 0
    return cfg.learning_rate * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

def train(cfg, rank=0, world=1, model=None, optimizer=None):
    """Train a GPT on cfg.input_file, keeping the best model at cfg.ckpt_path; returns its val loss. model, optimizer:
    these instead of a new GPTLanguageModel and AdamW (the exercises'); rank, world: torchrun's (start_distributed)."""
    chars, splits = load_data(cfg.input_file, cfg.block_size, fetch=cfg.input_file == input_file)
    if model is None:
        model = GPTLanguageModel(len(chars), cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size, cfg.dropout, cfg.flash)
    run = TrainingRun(cfg, model, chars, rank, world)  # below the lecture: --init_from, the device, the parameter count
    if optimizer is None:
        optimizer = adamw(model.parameters(), cfg.learning_rate, cfg.device)
    batch = lambda: [t.chunk(world)[rank]  # this process's share of the batch (all of it unless under torchrun)
                     for t in get_batch(splits['train'], cfg.batch_size * world, cfg.block_size, cfg.device)]
    stepper = run.speed_up(batch)  # torch.compile where it works; under torchrun, gradients averaged across processes
    evaluate = lambda: estimate_loss(run.fast, splits, cfg.eval_iters, cfg.batch_size, cfg.block_size, cfg.device,
                                     cfg.dtype)
    with run.steps(optimizer, evaluate) as steps:  # from 0 (or --resume's step); Ctrl-C saves the best model first
        for it in steps:
            if it % cfg.eval_interval == 0 or it == cfg.max_iters - 1:  # every once in a while: the losses
                run.report(it)  # printed with time and tokens/s, the best model saved (rank 0)
            for group in optimizer.param_groups:
                group['lr'] = get_lr(it, cfg)
            xb, yb = batch()
            with autocast(cfg.device, cfg.dtype):
                logits, loss = stepper(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            run.scaler.scale(loss).backward()  # loss.backward(); in float16 the loss scaled up, so small gradients survive
            run.scaler.step(optimizer)  # optimizer.step(); in float16 on unscaled gradients, skipped if they overflowed
            run.scaler.update()  # float16 only: the scale adapts
            run.tokens += xb.numel() * world
    return run.best

# ----------------------------------------------------------------------------- sampling
def main(argv=None):
    """Train (unless --sample), then sample from the best checkpoint."""
    cfg = parse_config(argv)
    rank, world = start_distributed(cfg)  # (0, 1) unless started by torchrun
    print(f"device: {cfg.device} (choose with --device=cuda, mps or cpu)" + (f"; {world} processes" if world > 1 else ""))
    torch.manual_seed(cfg.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # TF32 matmuls on CUDA
    if not cfg.sample:
        print("settings: cpu, a smaller model that trains in under 3 minutes on 2 cores; --settings=lecture for the "
              "lecture's (half a day on a CPU)" if cfg.settings == 'cpu' else "settings: the lecture's; --settings=cpu "
              "for the small ones that train in under 3 minutes on a CPU")
        train(cfg, rank, world)
    stop_distributed(world)
    if rank:  # rank 0 samples
        return
    model, ckpt = load_checkpoint(cfg.ckpt_path, cfg.device, cfg.flash)
    encode, decode = tokenizer(ckpt['chars'])
    unknown = sorted(set(cfg.prompt) - set(ckpt['chars']))
    if unknown:
        raise UserError(f"the prompt has characters the model never saw: {''.join(unknown)!r}; leave them out")
    print(f"sampling from {cfg.ckpt_path} (step {ckpt['step']}, val loss {ckpt['val_loss']:.4f}):")
    context = torch.tensor([encode(cfg.prompt) or [0]] * cfg.num_samples, device=cfg.device)  # no prompt: token 0
    # The lecture: print(decode(model.generate(context, max_new_tokens)[0].tolist())). sample_stream (below the line)
    # yields the same characters, faster and one at a time, so that they appear as they are sampled.
    show_samples(sample_stream(model, context, cfg.max_new_tokens, cfg.temperature, cfg.top_k), context, decode)
    if not cfg.sample:  # as in the lecture: 10,000 more characters to a file
        save_more('more.txt', sample_stream(model, context[:1], 10000, cfg.temperature, cfg.top_k), context[0], decode)

# ============================================================================= end of the lecture
# Plumbing the lecture does not have: download, speed helpers, checkpoints and resume, the command line and
# its checks, one-line errors. A reader following the video can stop here.

DATA_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'
DATA_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'

class UserError(Exception):
    """A mistake in the input or settings: printed as one line, exit code 1."""

def save_atomic(path, write):
    """Write a file through a temporary file and a rename, so it is never left half-written."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix='.tmp-')
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise

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

CACHE_MAGIC = b'gpt.py character cache 1\n'

def encode_file(path, chunk_bytes=2**24):
    """The vocabulary of the text at path and its ids, memory-mapped from a cache rebuilt when the text changes: path +
    '.cache' (in the temp folder if path's folder is read-only), a header (the text's size, mtime, a hash of its ends; the
    vocabulary), then 1 byte an id (2 above 256 characters). Building it reads the text in chunks, never whole: once for
    the vocabulary, which checks the UTF-8 before anything is written, and once to write the ids."""
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
            return list(chars), torch.from_numpy(np.concatenate([lut[ids] for ids in code_points(path, chunk_bytes)]))
        start = len(CACHE_MAGIC) + 8 + len(head)
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
    """The text at path as arrays of Unicode code points, chunk by chunk; a UserError at the first byte that is not UTF-8."""
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

def start_distributed(cfg):
    """Under `torchrun --nproc_per_node=N gpt.py`, join the N processes (NCCL on GPUs, gloo on CPUs), one GPU each;
    only rank 0 prints. Returns (rank, N), or (0, 1) when run as `python gpt.py`."""
    if 'RANK' not in os.environ:
        return 0, 1
    if cfg.device == 'cuda':
        torch.cuda.set_device(int(os.environ['LOCAL_RANK']))  # 'cuda' is now this process's GPU
    torch.distributed.init_process_group('nccl' if cfg.device == 'cuda' else 'gloo')
    if torch.distributed.get_rank():
        sys.stdout = open(os.devnull, 'w')
    return torch.distributed.get_rank(), torch.distributed.get_world_size()

def stop_distributed(world):
    """Under torchrun, leave the process group together. DistributedDataParallel's last gloo work is freed first:
    a process that exits while it is still held can abort ('terminate called without an active exception')."""
    if world > 1:
        gc.collect()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

class TrainingRun:
    """What gpt.py's training adds to the lecture's loop: fine-tuning's start, compile, torchrun, --resume, timing and
    tokens/s, the divergence check, the best checkpoint, the evaluation history, and Ctrl-C, which saves before it stops."""
    def __init__(self, cfg, model, chars, rank=0, world=1):
        if cfg.init_from:  # fine-tuning (the video's EX3): start from a trained model's weights
            init_weights(model, cfg.init_from, chars)
        self.cfg, self.model, self.chars, self.rank, self.world = cfg, model.to(cfg.device), chars, rank, world
        self.fast, self.best, self.tokens, self.eval_s, self.history = model, float('inf'), 0, 0.0, []
        fp16 = amp_dtype(cfg.device, cfg.dtype) == 'float16'  # its small range needs the loss scaled (bfloat16's not)
        self.scaler = torch.amp.GradScaler(cfg.device, enabled=fp16)
        print(f"{sum(p.numel() for p in model.parameters()):,} parameters; {len(chars)} characters in the vocabulary")

    def speed_up(self, batch):
        """The model that trains: compiled (tried on batch()) if cfg.compile, wrapped to average gradients under torchrun."""
        self.fast = try_compile(self.model, batch(), self.cfg.device, self.cfg.dtype) if self.cfg.compile else self.model
        return nn.parallel.DistributedDataParallel(self.fast) if self.world > 1 else self.fast

    @contextlib.contextmanager
    def steps(self, optimizer, evaluate):
        """The steps to take, from 0 or the resumed run's step; afterwards the summary, or on Ctrl-C the best model saved."""
        cfg, self.optimizer, self.evaluate = self.cfg, optimizer, evaluate
        first, self.best, self.history = load_resume(cfg, self.model, optimizer, self.chars, self.scaler) \
            if cfg.resume else (0, self.best, [])
        self.start = self.tick = time.time()
        self.it = first

        def counting():
            for self.it in range(first, cfg.max_iters):
                yield self.it
        try:
            yield counting()
            if cfg.max_iters == 0:  # no step: the untrained model is evaluated and saved
                self.report(0)
        except KeyboardInterrupt:  # Ctrl-C: keep the progress so far, then stop
            if self.rank:
                raise SystemExit(130)
            self.save_if_best(self.it, evaluate()['val'])
            print(f"\ninterrupted at step {self.it}: {cfg.ckpt_path} holds the best model so far (val loss {self.best:.4f}); "
                  "sample from it with `python gpt.py --sample`, or continue from the last evaluation with the same "
                  "command and --resume")
            raise SystemExit(130)
        if self.rank == 0:
            os.remove(resume_path(cfg.ckpt_path))  # the run is complete: nothing left to resume
            best = torch.load(cfg.ckpt_path, weights_only=True)  # the best model keeps the whole run's history
            save_atomic(cfg.ckpt_path, lambda f: torch.save({**best, 'history': self.history}, f))
            total = time.time() - self.start
            print(f"trained in {total:.1f}s ({self.eval_s / total:.0%} of it evaluating); peak memory "
                  f"{peak_memory(cfg.device)}; best val loss {self.best:.4f}, saved to {cfg.ckpt_path}")

    def report(self, it):
        """Rank 0 evaluates: the losses printed with the time and tokens/s, the best model and the resume state saved."""
        if self.rank:
            return
        if self.cfg.device == 'cuda':
            torch.cuda.synchronize()  # let the GPU finish the queued steps before timing them
        t = time.time()
        speed = f", {self.tokens / (t - self.tick):,.0f} tokens/s" if self.tokens else ""
        losses = self.evaluate()
        if not all(map(math.isfinite, losses.values())):
            raise UserError(f"the loss became {losses['train']} by step {it}: training diverged; "
                            "try a smaller --learning_rate")
        self.history.append((it, round(t - self.start, 3), losses['train'], losses['val']))
        self.save_if_best(it, losses['val'])
        print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
              f"{time.time() - self.start:.1f}s{speed}", flush=True)
        save_checkpoint(resume_path(self.cfg.ckpt_path), self.model, self.chars, self.cfg, it, self.best,
                        self.history, optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(),
                        rng=torch.get_rng_state(),
                        cuda_rng=torch.cuda.get_rng_state() if self.cfg.device == 'cuda' else None)  # for --resume
        self.tokens, self.tick = 0, time.time()
        self.eval_s += self.tick - t

    def save_if_best(self, it, val):
        if val < self.best:
            self.best = val
            save_checkpoint(self.cfg.ckpt_path, self.model, self.chars, self.cfg, it, val, self.history)

def adamw(params, lr, device):
    """AdamW, fused into one kernel where PyTorch has it for the device (CUDA, CPU), else the plain one (MPS)."""
    try:
        return torch.optim.AdamW(params, lr=lr, fused=device in ('cuda', 'cpu'))
    except (RuntimeError, TypeError):  # an older PyTorch, or a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr)

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

@torch.inference_mode()
def sample_stream(model, idx, max_new_tokens, temperature=1.0, top_k=None):
    """Yield max_new_tokens tokens (B,) continuing idx (B,T): generate's tokens (tests check it), with less work. While
    the context is shorter than block_size, a cache keeps every block's keys and values, so a new token costs one
    position. Once it is full, each step moves every token to another position and all is computed anew, except in
    the last block: there only the last position's output counts."""
    w = [torch.cat([torch.cat([h.query.weight, h.key.weight, h.value.weight]) for h in b.sa.heads]) for b in model.blocks]
    cache, ctx = [None] * len(w), idx[:, -model.block_size:]
    logits = forward_cached(model, w, cache, ctx, 0)
    for i in range(max_new_tokens):
        logits = logits / temperature
        if top_k is not None:  # as in generate: every token less likely than the k-th likeliest gets probability 0
            logits = logits.masked_fill(logits < torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]],
                                        float('-inf'))
        probs = F.softmax(logits, dim=-1)
        if probs.device.type == 'mps':  # multinomial on MPS gave ids out of range, or '!' only, in some PyTorch
            probs = probs.cpu()  # versions (PyTorch issues 92752, 98612; nanoGPT issue 458): draw them on the CPU
        token = torch.multinomial(probs, num_samples=1).to(ctx.device)  # (B,1)
        yield token[:, 0]
        if i < max_new_tokens - 1:
            full = ctx.shape[1] == model.block_size  # then the oldest token leaves and every other one moves left
            ctx = torch.cat((ctx[:, int(full):], token), dim=1)
            logits = forward_cached(model, w, None, ctx, 0) if full else \
                forward_cached(model, w, cache, token, ctx.shape[1] - 1)

def forward_cached(model, w, cache, tokens, start):
    """The logits (B,vocab) after tokens (B,t) at positions start..start+t-1: each block's keys and values of the
    positions before come from cache (2,B,nh,block_size,hs per block), those of tokens are put there; cache None: none."""
    B, t = tokens.shape
    x = model.token_embedding_table(tokens) + model.position_embedding_table(torch.arange(start, start + t,
                                                                                          device=tokens.device))
    for n, block in enumerate(model.blocks):
        q, k, v = F.linear(block.ln1(x), w[n]).view(B, t, len(block.sa.heads), 3, -1).permute(3, 0, 2, 1, 4)
        if cache is not None:  # (B,nh,t,hs) each, as in MultiHeadAttention
            if cache[n] is None:
                cache[n] = k.new_empty(2, *k.shape[:2], model.block_size, k.shape[-1])
            cache[n][:, :, :, start:start + t] = torch.stack((k, v))
            k, v = cache[n][:, :, :, :start + t]
        if n == len(model.blocks) - 1:  # the last block: only the last position's output is needed
            q, x = q[:, :, -1:], x[:, -1:]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)  # one query row needs no mask
        x = x + block.sa.proj(out.transpose(1, 2).reshape(B, x.shape[1], -1))
        mlp = block.ffwd.net  # without its last layer, Dropout: no dropout while sampling
        x = x + mlp[2](mlp[1](mlp[0](block.ln2(x))))
    return model.lm_head(model.ln_f(x[:, -1]))

def show_samples(tokens, context, decode):
    """Print each row of context with its sampled continuation; one sample appears character by character."""
    if len(context) > 1:
        rows = torch.cat([context, *(t[:, None] for t in tokens)], dim=1).tolist()
        return print(''.join(f"{'-' * 30} sample {i + 1} of {len(rows)}\n{decode(r)}\n" for i, r in enumerate(rows)), end='')
    print(decode(context[0].tolist()), end='', flush=True)
    for t in tokens:
        print(decode(t.tolist()), end='', flush=True)
    print()

def save_more(path, tokens, context, decode, n=10000):
    """Write context and its n sampled characters to path atomically; on a terminal, a progress line meanwhile."""
    ids, tty = context.tolist(), sys.stdout.isatty()
    for i, t in enumerate(tokens, 1):
        ids += t.tolist()
        if tty and i % 500 == 0:
            print(f"\rwriting {path}: {i:,} of {n:,} characters", end='', flush=True)
    save_atomic(path, lambda f: f.write(decode(ids).encode('utf-8')))
    print(('\r' if tty else '') + f"wrote {n:,} more characters to {path}".ljust(50 if tty else 0))

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

def save_checkpoint(path, model, chars, cfg, step, val_loss, history=(), **more):
    """Save weights, vocabulary, settings (sizes among them), step, val loss, history (step, s, train, val), atomically."""
    ckpt = dict(model=model.state_dict(), chars=chars, config=vars(cfg), step=step, val_loss=val_loss,
                history=list(history), **more)
    save_atomic(path, lambda f: torch.save(ckpt, f))

def load_checkpoint(path, device, flash):
    """The model and the checkpoint saved at path, or a clear error."""
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}: train one first with `python gpt.py`, or set --ckpt_path")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        c = ckpt['config']
        model = GPTLanguageModel(len(ckpt['chars']), c['n_embd'], c['n_head'], c['n_layer'], c['block_size'], 0.0, flash)
        model.load_state_dict(ckpt['model'])
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint this gpt.py can load ({type(e).__name__}): train a new one")
    return model.to(device), ckpt

def init_weights(model, path, chars):
    """Copy the weights of the checkpoint at path into model, to fine-tune it: the same characters and sizes, or an error."""
    _, ckpt = load_checkpoint(path, 'cpu', flash=False)
    if ckpt['chars'] != chars:
        raise UserError(f"{path} was trained on other characters than --input_file has: fine-tuning needs the same ones")
    try:
        model.load_state_dict(ckpt['model'])
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
                   'temperature', 'top_k', 'num_samples')  # these may change between the stop and the resume
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

class SettingsParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line on stderr (what is wrong, and where to look), exit code 2, no usage dump."""
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; --help lists every setting\n")

def true_or_false(s):
    """A boolean setting from the command line: True or False."""
    return ('false', 'true').index(s.lower()) == 1  # anything else: argparse reports a ValueError

def parse_settings(path, values, argv=None, description=None, cpu={}):
    """Each `name = value  # comment` line atop the script at path is a setting: (parser, defaults, --name=value given)."""
    with open(path, encoding='utf-8') as f:
        comments = dict(re.findall(r'^(\w+) += [^#\n]+# (.+)$', f.read(), re.M))
    defaults = {name: values[name] for name in comments}
    p = SettingsParser(prog=os.path.basename(path), description=description, allow_abbrev=False)
    for name, value in defaults.items():
        shown = f'lecture: {value!r}, CPU: {cpu[name]!r}' if name in cpu else f'default: {value!r}'
        kind = dict(type=true_or_false, nargs='?', const=True) if isinstance(value, bool) else \
            dict(type=int if value is None else type(value))  # None: an int setting that is off by default
        p.add_argument(f'--{name}', metavar='bool' if isinstance(value, bool) else kind['type'].__name__,
                       help=f'{comments[name]} ({shown})', **kind)
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    return p, defaults, given

def choose_device(name, parser):
    """The device called name; 'auto': the first of cuda, mps and cpu that is available here."""
    available = {'cuda': torch.cuda.is_available(), 'mps': torch.backends.mps.is_available(), 'cpu': True}
    name = next(d for d, ok in available.items() if ok) if name == 'auto' else name
    if not available.get(name):
        parser.error(f"device {name!r} is not available here: use --device=auto or --device=cpu")
    return name

def parse_config(argv=None):
    """The settings at the top, the CPU values if chosen, then --name=value from the command line."""
    p, defaults, given = parse_settings(__file__, globals(), argv, __doc__, cpu_settings)
    dev = choose_device(given.get('device', device), p)
    chosen = given.get('settings', settings)
    chosen = ('cpu' if dev == 'cpu' else 'lecture') if chosen == 'auto' else chosen
    if chosen not in ('lecture', 'cpu'):
        p.error(f"--settings must be auto, lecture or cpu, not {chosen!r}")
    cfg = argparse.Namespace(**{**defaults, **(cpu_settings if chosen == 'cpu' else {}), **given,
                                'device': dev, 'settings': chosen})
    check_settings(cfg, p.error)
    return cfg

def check_settings(cfg, error):
    """Every setting cfg has, checked before anything is downloaded, trained or sampled: error(one line) if one is wrong."""
    inf = math.inf
    rules = {name: (lambda v: v >= 1, 'it must be 1 or more')
             for name in ('batch_size', 'block_size', 'eval_interval', 'eval_iters', 'n_embd', 'n_head', 'num_samples')}
    rules.update({name: (lambda v: v >= 0, 'it must be 0 or more (0: none, see README)')
                  for name in ('max_iters', 'warmup_iters', 'n_layer', 'max_new_tokens')})
    rules.update(seed=(lambda v: 0 <= v < 2**63, 'it must be between 0 and 2**63 - 1'),
                 dropout=(lambda v: 0 <= v < 1, 'it is a probability: at least 0 and below 1'),
                 learning_rate=(lambda v: 0 < v < inf, 'it must be a number above 0, like 3e-4'),
                 temperature=(lambda v: 0 < v < inf, 'it must be above 0 (1: as trained; greedy is --top_k=1)'),
                 top_k=(lambda v: v is None or v >= 1, 'it must be 1 or more (1: greedy); leave it out for all'),
                 dtype=(lambda v: v in ('auto', 'bfloat16', 'float16', 'float32'), 'use auto, bfloat16, float16 or float32'),
                 input_file=(lambda v: v and not os.path.isdir(v), 'it must name a file, not a folder'),
                 ckpt_path=(lambda v: v and not os.path.isdir(v), 'it must name a file, not a folder'),
                 init_from=(lambda v: not v or os.path.isfile(v), 'it must name a checkpoint file (or be left out)'))
    for name, (ok, allowed) in rules.items():
        if hasattr(cfg, name) and not ok(getattr(cfg, name)):
            error(f"--{name}={getattr(cfg, name)!r} is not allowed: {allowed}")
    if hasattr(cfg, 'n_head') and cfg.n_embd % cfg.n_head:
        error(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head}): each head gets n_embd // n_head")
    if os.path.exists(cfg.input_file) and not os.access(cfg.input_file, os.R_OK):
        error(f"--input_file={cfg.input_file!r} cannot be read: check its permissions")
    if not hasattr(cfg, 'ckpt_path'):
        return
    folder = os.path.dirname(os.path.abspath(cfg.ckpt_path))
    if not cfg.sample and not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
        error(f"--ckpt_path={cfg.ckpt_path!r} is not allowed: its folder {folder} must exist and be writable")
    if not cfg.sample and (os.path.isdir('more.txt') or not os.access('.', os.W_OK)):
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
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves first): stop quietly
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    except (MemoryError, RuntimeError) as e:  # torch.OutOfMemoryError is a RuntimeError too
        if not isinstance(e, MemoryError) and 'memory' not in str(e):
            raise
        print("error: out of memory: use a smaller --batch_size, --block_size, --n_embd or --n_layer", file=sys.stderr)
        sys.exit(1)

if __name__ == '__main__':
    run(main)
