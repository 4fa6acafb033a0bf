"""The lecture's baseline: a bigram language model on tiny Shakespeare (val loss about 2.5).

Each character predicts the next from a lookup table alone. The data, batches, loss estimate and
sampling are gpt.py's, so this file holds only what is new: the model and its training loop.
Every setting below can be changed on the command line: --name=value (--help lists them)."""
import argparse

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt import (GPTLanguageModel, check_settings, choose_device, estimate_loss, get_batch, load_data,
                 parse_settings, run, tokenizer)

# hyperparameters
batch_size = 32       # how many independent sequences are processed in parallel
block_size = 8        # maximum context length for predictions
max_iters = 3000      # training steps
eval_interval = 300   # estimate the losses every this many steps
learning_rate = 1e-2  # AdamW's learning rate
eval_iters = 200      # batches averaged by each loss estimate
device = 'auto'       # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
seed = 1337           # random seed
input_file = 'input.txt'  # training text (tiny Shakespeare is downloaded if this is missing)


class BigramLanguageModel(nn.Module):
    """Reads the logits for the next token straight off a (vocab_size, vocab_size) table."""
    block_size = 1  # the next token depends on the current one alone

    def __init__(self, vocab_size):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding_table(idx)  # (B,T,vocab_size)
        if targets is None:
            return logits, None
        B, T, C = logits.shape
        loss = F.cross_entropy(logits.view(B * T, C), targets.view(B * T))
        return logits, loss

    generate = GPTLanguageModel.generate  # the same sampling loop, with the context cropped to 1 token


def train(model, splits, max_iters=max_iters, learning_rate=learning_rate, eval_interval=eval_interval,
          batch_size=batch_size, block_size=block_size, eval_iters=eval_iters, device='cpu'):
    """The lecture's training loop: AdamW steps on random batches, the losses printed every eval_interval
    steps and at the last one, which it returns. (exercises/milestones.py trains every step of the video with it.)"""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    losses = estimate_loss(model, splits, eval_iters, batch_size, block_size, device) if max_iters == 0 else None
    for it in range(max_iters):
        if it % eval_interval == 0 or it == max_iters - 1:
            losses = estimate_loss(model, splits, eval_iters, batch_size, block_size, device)
            print(f"step {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}", flush=True)
        xb, yb = get_batch(splits['train'], batch_size, block_size, device)
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return losses


def main(argv=None):
    """Train the bigram model, print the losses as it goes, then a 500-character sample."""
    p, defaults, given = parse_settings(__file__, globals(), argv, __doc__)
    c = argparse.Namespace(**{**defaults, **given})
    c.device = choose_device(c.device, p)
    check_settings(c, p.error)  # gpt.py's rules for the settings the two share: one line if one is wrong
    torch.manual_seed(c.seed)
    chars, splits = load_data(c.input_file, c.block_size, fetch=c.input_file == input_file)
    model = BigramLanguageModel(len(chars)).to(c.device)
    losses = train(model, splits, c.max_iters, c.learning_rate, c.eval_interval, c.batch_size, c.block_size,
                   c.eval_iters, c.device)
    _, decode = tokenizer(chars)
    context = torch.zeros((1, 1), dtype=torch.long, device=c.device)
    print(decode(model.generate(context, 500)[0].tolist()))
    return losses


if __name__ == '__main__':
    run(main)
