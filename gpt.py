"""Let's build GPT: a character-level GPT trained on tiny Shakespeare, in the lecture's order.

`python gpt.py` trains, then samples; `python gpt.py --sample --prompt="ROMEO:"` samples from the
saved checkpoint; --name=value changes a setting for one run (--help lists them). A line
`name = A if gpu else B` holds two values: the lecture's, A, runs on an NVIDIA GPU; B, smaller, on
a CPU or a Mac, so that a run takes minutes (--settings=lecture or cpu picks one anywhere). What
differs from the lecture's script: README.md; what the video does not build: the extras package."""
import torch
import torch.nn as nn
from torch.nn import functional as F

from extras import checkpoints, config, corpus, distributed, errors, precision, progress, sampling
from extras import schedule, speed  # the extras package: what the video does not build (skip it)

# hyperparameters: the lecture's before `else` (10,788,929 parameters; val loss about 1.48 on one
# GPU), a CPU's after it (a smaller model that trains in about 1.5 minutes on 2 cores)
gpu = torch.cuda.is_available()  # the lecture's values need an NVIDIA GPU
batch_size = 64 if gpu else 48         # independent sequences processed in parallel
block_size = 256 if gpu else 64        # what is the maximum context length for predictions?
max_iters = 5000 if gpu else 3000      # training steps
eval_interval = 500 if gpu else 250    # estimate the losses every this many steps
learning_rate = 3e-4 if gpu else 2e-3  # AdamW's learning rate
eval_iters = 200 if gpu else 10        # batches averaged by each loss estimate
n_embd = 384 if gpu else 128           # embedding dimension
n_head = 6 if gpu else 2               # attention heads per block (head_size = n_embd // n_head)
n_layer = 6 if gpu else 2              # transformer blocks
dropout = 0.2 if gpu else 0.0          # dropout probability while training
# beyond the lecture
warmup_iters = 0 if gpu else 50        # steps of linear learning-rate warmup
lr_decay = False if gpu else True      # decay the learning rate linearly to 0 over the last 40%
compile = True if gpu else False       # torch.compile the model (runs without it where that fails)
settings = 'auto'     # 'lecture': the values before else; 'cpu': after it; auto: lecture on CUDA
device = 'auto'       # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
seed = 1337           # random seed: same seed and device, same losses and samples
flash = False         # opt-in: a fused kernel instead of Head's lines (edits of them do nothing)
dtype = 'auto'        # 'bfloat16', 'float16' or 'float32'; auto: what the hardware has natively
input_file = 'input.txt'  # training text (tiny Shakespeare is downloaded if this is missing)
ckpt_path = 'ckpt.pt'     # where the model with the best val loss is saved
sample = False            # only sample from the checkpoint, no training
resume = False            # continue an unfinished run from its last evaluation (same settings)
init_from = ''            # fine-tune: start from this checkpoint's weights (same characters, sizes)
prompt = ''               # text the sample continues
max_new_tokens = 500      # characters to print after training, or with --sample
temperature = 1.0         # divides the logits before sampling: below 1 safer, above 1 wilder
top_k = None              # sample only from the top_k likeliest characters (1: greedy)
num_samples = 1           # independent samples of the prompt, printed one after another
more_chars = 10000        # characters sampled into more.txt after training (0: none)

# ----------------------------------------------------------------------------- data and tokenizer
def load_data(path, block_size, need=None):
    """The characters of the text at path, and its ids split 90/10 into train and val."""
    # the lecture's sorted(list(set(text))) and encode(text), memory-mapped: any size fits
    chars, ids = corpus.load_text(path, block_size, need)
    n = int(0.9 * len(ids))  # first 90% will be train, rest val
    return chars, {'train': ids[:n], 'val': ids[n:]}

def tokenizer(chars):
    """The character tokenizer: (encode, decode) between strings and lists of integers."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    encode = lambda s: [stoi[c] for c in s]  # encoder: take a string, output a list of integers
    decode = lambda l: ''.join([itos[i] for i in l])  # decoder: a list of integers to a string
    return encode, decode

# --------------------------------------------------------------------------- batches, loss estimate
def get_batch(data, batch_size, block_size, device, generator=None):
    """A small batch of data of inputs x and targets y, which are x shifted by one."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    x = torch.stack([data[i:i + block_size] for i in ix]).long()
    y = torch.stack([data[i + 1:i + block_size + 1] for i in ix]).long()
    x, y = x.to(device), y.to(device)
    return x, y

@torch.no_grad()
def estimate_loss(model, splits, eval_iters, batch_size, block_size, device):
    """The mean loss over eval_iters batches of each split, in eval mode (dropout off)."""
    out = {}
    model.eval()
    for split, data in splits.items():
        g = torch.Generator().manual_seed(0)  # the same batches every time: estimates compare
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(data, batch_size, block_size, device, g)
            logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean().item()
    model.train()
    return out

# ----------------------------------------------------------------------------- the model
class Head(nn.Module):
    """ one head of self-attention """

    def __init__(self, n_embd, head_size, block_size, dropout, flash=False):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)
        self.flash = flash

    def forward(self, x):
        # input of size (batch, time-step, channels)
        # output of size (batch, time-step, head size)
        B, T, C = x.shape
        k = self.key(x)    # (B,T,hs)
        q = self.query(x)  # (B,T,hs)
        v = self.value(x)  # (B,T,hs)
        if self.flash:  # opt-in: the five lines below in one fused kernel (tests check they agree)
            p = self.dropout.p if self.training else 0.0
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        # compute attention scores ("affinities"), scaled by 1/sqrt(head_size)
        wei = q @ k.transpose(-2, -1) * k.shape[-1]**-0.5  # (B,T,hs) @ (B,hs,T) -> (B,T,T)
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # (B,T,T)
        wei = F.softmax(wei, dim=-1)  # (B,T,T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        out = wei @ v  # (B,T,T) @ (B,T,hs) -> (B,T,hs)
        return out

class MultiHeadAttention(nn.Module):
    """ multiple heads of self-attention in parallel """

    def __init__(self, n_embd, n_head, block_size, dropout, flash=False):
        super().__init__()
        head_size = n_embd // n_head
        self.heads = nn.ModuleList([Head(n_embd, head_size, block_size, dropout, flash)
                                    for _ in range(n_head)])
        self.proj = nn.Linear(head_size * n_head, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        out = self.dropout(self.proj(out))
        return out

class FeedForward(nn.Module):
    """ a simple linear layer followed by a non-linearity """

    def __init__(self, n_embd, dropout):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.ReLU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)

class Block(nn.Module):
    """ Transformer block: communication followed by computation """

    def __init__(self, n_embd, n_head, block_size, dropout, flash=False):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
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

    def __init__(self, vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                 block_size=block_size, dropout=dropout, flash=False):
        super().__init__()
        self.block_size = block_size
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout, flash)
                                      for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)
        # better init, not covered in the original GPT video, but important (nanoGPT's)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        # idx and targets are both (B,T) tensor of integers
        tok_emb = self.token_embedding_table(idx)  # (B,T,C)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))  # (T,C)
        x = tok_emb + pos_emb  # (B,T,C)
        x = self.blocks(x)  # (B,T,C)
        x = self.ln_f(x)  # (B,T,C)
        logits = self.lm_head(x)  # (B,T,vocab_size)
        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            logits = logits.view(B * T, C)
            targets = targets.view(B * T)
            loss = F.cross_entropy(logits, targets, ignore_index=-1)  # -1: no target here
            logits = logits.view(B, T, C)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens
            idx_cond = idx[:, -self.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step; divide by the temperature (nanoGPT's)
            logits = logits[:, -1, :] / temperature  # becomes (B, C)
            if top_k is not None:  # nanoGPT's: only the top_k likeliest tokens can be drawn
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float('Inf')
            # apply softmax to get probabilities
            probs = F.softmax(logits, dim=-1)  # (B, C)
            if probs.device.type == 'mps':  # a Mac's multinomial can draw tokens of probability 0
                probs = probs.cpu()  # (PyTorch issues 136623, 192577): draw them on the CPU
            # sample from the distribution
            idx_next = torch.multinomial(probs, num_samples=1).to(idx.device)  # (B, 1)
            # append sampled index to the running sequence
            idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
        return idx

# ----------------------------------------------------------------------------- training
def train(cfg, model=None, optimizer=None):
    """Train a GPT on cfg.input_file (model, optimizer: an exercise's); returns the best val."""
    chars, splits = load_data(cfg.input_file, cfg.block_size, checkpoints.chars_needed(cfg))
    if model is None:
        model = GPTLanguageModel(len(chars), cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size,
                                 cfg.dropout, cfg.flash)
    if cfg.init_from:  # fine-tune (EX3): start from a trained model's weights
        checkpoints.init_weights(model, cfg.init_from, chars)
    model.to(cfg.device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params:,} parameters; {len(chars)} characters in the vocabulary")
    if optimizer is None:  # create a PyTorch optimizer (fused: one kernel for all weights, faster)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                      fused=cfg.device in ('cuda', 'cpu'))
    scaler = precision.grad_scaler(cfg)  # float16: the loss scaled up, so small gradients survive
    start, best, history = checkpoints.load_resume(cfg, model, optimizer, chars, scaler) \
        if cfg.resume else (0, float('inf'), [])  # --resume: from a stopped run's last evaluation
    rank, world = distributed.rank_and_world()  # under torchrun: this process, and how many
    fast = speed.wrap(model, cfg, world)  # TF32, torch.compile, torchrun: the same weights as model
    with progress.Clock(cfg, start, history, rank, world) as clock:  # and on Ctrl-C, what to do
        for iter in range(start, cfg.max_iters + 1):
            # every once in a while evaluate the loss on train and val sets
            if iter % cfg.eval_interval == 0 or iter == cfg.max_iters:
                with precision.autocast(cfg.device, cfg.dtype):
                    losses = estimate_loss(fast, splits, cfg.eval_iters, cfg.batch_size,
                                           cfg.block_size, cfg.device)
                if losses['val'] < best:  # the best model so far: save it (rank 0 under torchrun)
                    best = losses['val']
                    checkpoints.save(cfg.ckpt_path, model, chars, cfg, iter, best, history)
                clock.report(iter, losses)  # print them (one line and a stop if they diverged)
                checkpoints.save_resume(cfg, model, optimizer, scaler, chars, iter, best, history)
            if iter == cfg.max_iters:
                break  # the last evaluation comes after the last step
            # sample a batch of data (under torchrun, each process takes its share)
            xb, yb = distributed.share(get_batch(splits['train'], cfg.batch_size * world,
                                                 cfg.block_size, cfg.device), rank, world)
            # evaluate the loss
            with precision.autocast(cfg.device, cfg.dtype):  # bfloat16 where the hardware has it
                logits, loss = fast(xb, yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # loss.backward(); float16 scales the loss up first
            for group in optimizer.param_groups:  # this step's learning rate: warmup, then decay
                group['lr'] = schedule.get_lr(iter, cfg)
            scaler.step(optimizer)  # optimizer.step(); float16 skips it if the gradients overflowed
            scaler.update()
            clock.stepped(iter)  # a progress line every 10 seconds: step, time a step, time left
    checkpoints.finish(cfg.ckpt_path, history)  # no resume state; the best model keeps the history
    clock.summary(best)
    return best

# ----------------------------------------------------------------------------- sampling
def main(argv=None):
    """Train (unless --sample), then sample from the best checkpoint."""
    cfg = config.parse_config(argv, globals())  # the settings above (which column: --settings)
    rank, world = distributed.start(cfg)  # under torchrun, the processes join here
    print(config.describe_settings(cfg))  # the device, and which values run and why
    torch.manual_seed(cfg.seed)
    if not cfg.sample:
        train(cfg)
    distributed.stop()
    if rank == 0:  # the lecture: print(decode(m.generate(context, max_new_tokens=500)[0].tolist()))
        sampling.sample(cfg, GPTLanguageModel, tokenizer)  # generate, a token at a time; more.txt

if __name__ == '__main__':
    errors.run(main)  # a mistake in the settings or the data: one line, no traceback
