"""Sampling that streams: the model's own generate called a token at a time, printed as they come, and more.txt."""
import sys

import torch

from extras.checkpoints import load
from extras.errors import UserError
from extras.files import save_atomic


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
    model, ckpt = load(cfg.ckpt_path, cfg.device, build, cfg.flash)
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
