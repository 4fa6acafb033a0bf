"""Let's build GPT in MLX: gpt.py's model and training in Apple's MLX, for a Mac with Apple silicon.

`python gpt_mlx.py` trains, then samples, like `python gpt.py`: the same settings at the top (and
the same smaller ones unless --settings=lecture), the same --name=value, the same printed lines, and
the same checkpoint file: `python gpt.py --sample` samples from what this script saved, and `python
gpt_mlx.py --sample` from what gpt.py saved (the weights under the lecture's state_dict names; tests
check the logits agree within 1e-4). On Apple silicon MLX runs on the GPU (Metal); on Linux, with
mlx[cpu], on the CPU, slowly: there it is here to be tested against gpt.py, train with gpt.py.

What MLX does differently from PyTorch, and where it shows below:
- lazy evaluation: `a @ b` only records the work; it is done when a value is needed (`.item()`,
  printing) or `mx.eval(...)` asks for it. The training loop calls `mx.eval` once a step;
- no `backward`: `nn.value_and_grad(model, fn)` gives a function that returns the loss and the
  gradients of the model's weights, and `optimizer.update(model, grads)` is optimizer.step();
- `mx.compile` compiles the whole step (forward, backward, AdamW) into one graph; the model's and
  the optimizer's state, and the random state that dropout draws from, are its inputs and outputs;
- a module runs through `__call__`, not `forward`; arrays live in unified memory (no .to(device));
- `mx.random.categorical` samples from logits: softmax and multinomial in one call.
What differs from gpt.py: float32 only (no --dtype), no --resume, --init_from or torchrun;
nn.Sequential names its modules `layers.0`, `layers.1`, ..., which the checkpoint leaves out."""
import math
import sys

import numpy as np
import torch  # only to read and write gpt.py's checkpoints


import extras  # what the video does not build: the settings, the text's cache, checkpoints
try:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten, tree_unflatten
except ImportError:  # Windows, Intel Macs, Linux before glibc 2.35: no MLX
    if __name__ != '__main__':
        raise
    print("error: MLX is not installed here (it runs on Apple silicon, and on Linux as mlx[cpu]): "
          "use gpt.py, the same model in PyTorch", file=sys.stderr)
    sys.exit(1)

# hyperparameters: gpt.py's, the lecture's before `else`, a CPU's or a laptop's after it (the
# video: not the lecture's model on a MacBook); --settings=lecture runs the lecture's
gpu = False  # gpt.py's `gpu`, an NVIDIA GPU: MLX runs on a Mac's, so the values after else run
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
settings = 'auto'     # 'lecture': the values before else; 'cpu' (auto): after it
device = 'auto'       # 'gpu' (Metal) or 'cpu'; 'auto' takes the GPU where there is one
seed = 1337           # random seed: same seed and device, same losses and samples
compile = True        # mx.compile the training step
input_file = 'input.txt'  # training text (tiny Shakespeare is downloaded if this is missing)
ckpt_path = 'ckpt.pt'     # where the model with the best val loss is saved (gpt.py reads it too)
sample = False            # only sample from the checkpoint, no training
prompt = ''               # text the sample continues
max_new_tokens = 500      # characters to print after training, or with --sample
temperature = 1.0         # divides the logits before sampling: below 1 safer, above 1 wilder
top_k = None              # sample only from the top_k likeliest characters (1: greedy)
num_samples = 1           # independent samples of the prompt, printed one after another
more_chars = 10000        # characters sampled into more.txt after training (0: none)


# ----------------------------------------------------------------------------- data and tokenizer
def load_data(path, block_size):
    """The characters of the text at path, and its ids split 90/10 into train and val (numpy)."""
    chars, data = extras.corpus.load_text(path, block_size)  # gpt.py's memory-mapped cache, checked
    data = data.numpy()  # batches are cut from it with numpy, so the text is never copied whole
    n = int(0.9 * len(data))  # first 90% will be train, rest val
    return chars, {'train': data[:n], 'val': data[n:]}

def tokenizer(chars):
    """The character tokenizer: (encode, decode) between strings and lists of integers."""
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}
    encode = lambda s: [stoi[c] for c in s]  # encoder: take a string, output a list of integers
    decode = lambda l: ''.join([itos[i] for i in l])  # decoder: a list of integers to a string
    return encode, decode

# --------------------------------------------------------------------------- batches, loss estimate
def get_batch(data, batch_size, block_size, key=None):
    """A small batch of data of inputs x and targets y, which are x shifted by one."""
    ix = mx.random.randint(0, len(data) - block_size, (batch_size,), key=key).tolist()
    x = np.stack([data[i:i + block_size] for i in ix]).astype(np.int32)
    y = np.stack([data[i + 1:i + block_size + 1] for i in ix]).astype(np.int32)
    return mx.array(x), mx.array(y)

def estimate_loss(model, splits, eval_iters, batch_size, block_size):
    """The mean loss over eval_iters batches of each split, in eval mode (dropout off)."""
    out = {}
    model.eval()
    for split, data in splits.items():
        key = mx.random.key(0)  # the same batches every time: estimates compare
        losses = []
        for k in range(eval_iters):
            key, batch_key = mx.random.split(key)
            X, Y = get_batch(data, batch_size, block_size, batch_key)
            logits, loss = model(X, Y)
            losses.append(loss.item())  # .item(): here the lazy graph is computed
        out[split] = sum(losses) / len(losses)
    model.train()
    return out

# ----------------------------------------------------------------------------- the model
class Head(nn.Module):
    """ one head of self-attention """

    def __init__(self, n_embd, head_size, block_size, dropout):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self._tril = mx.tril(mx.ones((block_size, block_size)))  # '_': a buffer, not a weight
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x):
        # input of size (batch, time-step, channels)
        # output of size (batch, time-step, head size)
        B, T, C = x.shape
        k = self.key(x)    # (B,T,hs)
        q = self.query(x)  # (B,T,hs)
        v = self.value(x)  # (B,T,hs)
        # compute attention scores ("affinities"), scaled by 1/sqrt(head_size)
        wei = q @ k.transpose(0, 2, 1) * k.shape[-1]**-0.5  # (B,T,hs) @ (B,hs,T) -> (B,T,T)
        wei = mx.where(self._tril[:T, :T] == 0, float('-inf'), wei)  # (B,T,T)
        wei = mx.softmax(wei, axis=-1)  # (B,T,T)
        wei = self.dropout(wei)
        # perform the weighted aggregation of the values
        out = wei @ v  # (B,T,T) @ (B,T,hs) -> (B,T,hs)
        return out

class MultiHeadAttention(nn.Module):
    """ multiple heads of self-attention in parallel """

    def __init__(self, n_embd, n_head, block_size, dropout):
        super().__init__()
        head_size = n_embd // n_head
        self.heads = [Head(n_embd, head_size, block_size, dropout) for _ in range(n_head)]
        self.proj = nn.Linear(head_size * n_head, n_embd)
        self.dropout = nn.Dropout(dropout)

    def __call__(self, x):
        out = mx.concatenate([h(x) for h in self.heads], axis=-1)
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

    def __call__(self, x):
        return self.net(x)

class Block(nn.Module):
    """ Transformer block: communication followed by computation """

    def __init__(self, n_embd, n_head, block_size, dropout):
        # n_embd: embedding dimension, n_head: the number of heads we'd like
        super().__init__()
        self.sa = MultiHeadAttention(n_embd, n_head, block_size, dropout)
        self.ffwd = FeedForward(n_embd, dropout)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def __call__(self, x):
        x = x + self.sa(self.ln1(x))
        x = x + self.ffwd(self.ln2(x))
        return x

class GPTLanguageModel(nn.Module):

    def __init__(self, vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                 block_size=block_size, dropout=dropout):
        super().__init__()
        self.block_size = block_size
        # each token directly reads off the logits for the next token from a lookup table
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size, dropout)
                                      for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)  # final layer norm
        self.lm_head = nn.Linear(n_embd, vocab_size)
        # better init, as gpt.py's (nanoGPT's): normal with std 0.02, biases 0 (LayerNorm: 1, 0)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight = mx.random.normal(module.weight.shape) * 0.02
            if isinstance(module, nn.Linear) and 'bias' in module:
                module.bias = mx.zeros(module.bias.shape)

    def __call__(self, idx, targets=None):
        B, T = idx.shape
        # idx and targets are both (B,T) array of integers
        tok_emb = self.token_embedding_table(idx)  # (B,T,C)
        pos_emb = self.position_embedding_table(mx.arange(T))  # (T,C)
        x = tok_emb + pos_emb  # (B,T,C)
        x = self.blocks(x)  # (B,T,C)
        x = self.ln_f(x)  # (B,T,C)
        logits = self.lm_head(x)  # (B,T,vocab_size)
        if targets is None:
            loss = None
        else:
            B, T, C = logits.shape
            loss = nn.losses.cross_entropy(logits.reshape(B * T, C), targets.reshape(B * T),
                                           reduction='mean')
        return logits, loss

    def generate(self, idx, max_new_tokens):
        # idx is (B, T) array of indices in the current context
        for _ in range(max_new_tokens):
            # crop idx to the last block_size tokens
            idx_cond = idx[:, -self.block_size:]
            # get the predictions
            logits, loss = self(idx_cond)
            # focus only on the last time step
            logits = logits[:, -1, :]  # becomes (B, C)
            # sample from the distribution: softmax and multinomial in one
            idx_next = mx.random.categorical(logits, num_samples=1)  # (B, 1)
            # append sampled index to the running sequence
            idx = mx.concatenate([idx, idx_next], axis=1)  # (B, T+1)
        return idx

# ----------------------------------------------------------------------------- gpt.py's checkpoints
def torch_name(name):
    """gpt.py's state_dict name of this script's weight: nn.Sequential's 'layers' left out."""
    return '.'.join(part for part in name.split('.') if part != 'layers')

def state_dict(model):
    """The weights as gpt.py's model has them: PyTorch tensors under the lecture's names, with
    each Head's tril buffer, which PyTorch saves too."""
    flat = tree_flatten(model.parameters())
    weights = {torch_name(k): torch.from_numpy(np.array(w)) for k, w in flat}
    tril = torch.tril(torch.ones(model.block_size, model.block_size))
    for k in [k for k in weights if k.endswith('.key.weight')]:
        weights[k.replace('key.weight', 'tril')] = tril.clone()
    return weights

def load_checkpoint(path):
    """The model saved at path, by gpt.py or by this script, and the checkpoint; or one line."""
    ckpt = extras.checkpoints.read(path, script='gpt_mlx.py')
    c = ckpt['config']
    model = GPTLanguageModel(len(ckpt['chars']), c['n_embd'], c['n_head'], c['n_layer'],
                             c['block_size'], 0.0)
    ours = dict(tree_flatten(model.parameters()))  # this script's names: its weights
    theirs = {k: w for k, w in ckpt['model'].items() if not k.endswith('.tril')}  # the lecture's
    if sorted(map(torch_name, ours)) != sorted(theirs) or any(
            tuple(theirs[torch_name(k)].shape) != tuple(w.shape) for k, w in ours.items()):
        raise extras.errors.UserError(f"{path} holds another model than gpt.py's lecture model: "
                               "train a new one")
    weights = [(k, mx.array(theirs[torch_name(k)].float().numpy())) for k in ours]
    model.update(tree_unflatten(weights))  # {'a.0.b': w} back to MLX's nested {'a': [{'b': w}]}
    model.eval()
    return model, ckpt

# ----------------------------------------------------------------------------- training
def train(cfg):
    """Train a GPT on cfg.input_file, keeping the best model at cfg.ckpt_path; returns the best
    val loss."""
    chars, splits = load_data(cfg.input_file, cfg.block_size)
    model = GPTLanguageModel(len(chars), cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size,
                             cfg.dropout)
    mx.eval(model.parameters())
    n_params = sum(w.size for _, w in tree_flatten(model.parameters()))
    print(f"{n_params:,} parameters; {len(chars)} characters in the vocabulary")
    # torch's AdamW: bias correction on; its defaults otherwise (betas, eps, weight decay 0.01)
    optimizer = optim.AdamW(learning_rate=cfg.learning_rate, bias_correction=True)
    loss_and_grad = nn.value_and_grad(model, lambda model, x, y: model(x, y)[1])

    def step(xb, yb):  # forward, backward and AdamW's update; what PyTorch does in four lines
        loss, grads = loss_and_grad(model, xb, yb)
        optimizer.update(model, grads)
        return loss
    if cfg.compile:  # one graph; it reads and writes the weights, AdamW's moments, dropout's rng
        state = [model.state, optimizer.state, mx.random.state]
        step = mx.compile(step, inputs=state, outputs=state)
    best = math.inf
    with extras.progress.Clock(cfg) as clock:  # gpt.py's printed lines; Ctrl-C: where the best is
        for iter in range(cfg.max_iters + 1):
            # every once in a while evaluate the loss on train and val sets
            if iter % cfg.eval_interval == 0 or iter == cfg.max_iters:
                losses = estimate_loss(model, splits, cfg.eval_iters, cfg.batch_size, cfg.block_size)
                clock.report(iter, losses)  # print them (one line and a stop if they diverged)
                if losses['val'] < best:  # keep the best model, in gpt.py's checkpoint format
                    best = losses['val']
                    extras.checkpoints.save(cfg.ckpt_path, state_dict(model), chars, cfg, iter, best)
            if iter == cfg.max_iters:
                break  # the last evaluation comes after the last step
            # sample a batch of data
            xb, yb = get_batch(splits['train'], cfg.batch_size, cfg.block_size)
            optimizer.learning_rate = extras.schedule.get_lr(iter, cfg)  # gpt.py's warmup and decay
            loss = step(xb, yb)  # forward, backward, update: only recorded, MLX is lazy
            mx.eval(loss, model.state, optimizer.state)  # now computed
            clock.stepped(iter)  # a progress line every 10 seconds
    ckpt = extras.checkpoints.read(cfg.ckpt_path)  # the best model keeps the history
    extras.files.save_atomic(cfg.ckpt_path, lambda f: torch.save({**ckpt, 'history': clock.history}, f))
    clock.summary(best, f"{mx.get_peak_memory() / 2**20:,.0f} MiB (MLX's arrays)")
    return best

# ----------------------------------------------------------------------------- sampling
def sample_stream(model, idx, max_new_tokens, temperature=1.0, top_k=None):
    """Yield max_new_tokens tokens (B,) continuing idx (B,T), one at a time, as generate draws
    them; temperature and top_k as in gpt.py (top_k=1: greedy)."""
    model.eval()
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -model.block_size:])
        logits = logits[:, -1, :] / temperature  # (B,vocab_size)
        if top_k is not None:  # every token less likely than the k-th likeliest gets no chance
            kth = mx.sort(logits, axis=-1)[:, -min(top_k, logits.shape[-1])][:, None]
            logits = mx.where(logits < kth, float('-inf'), logits)
        idx_next = mx.random.categorical(logits, num_samples=1)  # (B,1)
        idx = mx.concatenate([idx, idx_next], axis=1)
        yield idx_next[:, 0]

def main(argv=None):
    """Train (unless --sample), then sample from the best checkpoint, as gpt.py does."""
    devices = {'gpu': mx.metal.is_available(), 'cpu': True}
    cfg = extras.config.parse_config(argv, globals(), devices)  # the settings above, --name=value
    mx.set_default_device(mx.gpu if cfg.device == 'gpu' else mx.cpu)
    device = f"device: {cfg.device}, MLX {mx.__version__} (choose with --device=gpu or cpu)"
    print(extras.config.describe_settings(cfg, device))  # and which values run, and why
    mx.random.seed(cfg.seed)
    if not cfg.sample:
        train(cfg)
    model, ckpt = load_checkpoint(cfg.ckpt_path)
    encode, decode = tokenizer(ckpt['chars'])
    unknown = sorted(set(cfg.prompt) - set(ckpt['chars']))
    if unknown:
        raise extras.errors.UserError(f"the prompt has characters the model never saw: "
                               f"{''.join(unknown)!r}; leave them out")
    print(f"sampling from {cfg.ckpt_path} (step {ckpt['step']}, val loss {ckpt['val_loss']:.4f}):")
    context = mx.array([encode(cfg.prompt) or [0]] * cfg.num_samples)  # no prompt: token 0
    stream = sample_stream(model, context, cfg.max_new_tokens, cfg.temperature, cfg.top_k)
    extras.sampling.show_samples(stream, context, decode)  # printed as they come
    if not cfg.sample and cfg.more_chars:  # as in the lecture: 10,000 more characters to a file
        more = sample_stream(model, context[:1], cfg.more_chars, cfg.temperature, cfg.top_k)
        extras.sampling.save_more('more.txt', more, context[0], decode, cfg.more_chars)

if __name__ == '__main__':
    extras.errors.run(main)  # a mistake in the settings or the data: one line, no traceback
