"""Checkpoints: the best model of a run (weights, vocabulary, settings, history), the state --resume goes on
from, and fine-tuning's starting weights. What builds a model is handed in: this package never imports gpt."""
import argparse
import os

import torch

from extras.errors import UserError
from extras.files import save_atomic


def save(path, model, chars, cfg, step, val_loss, history=(), **more):
    """Save weights (model's state_dict, or that dict itself: gpt_mlx.py's), vocabulary, settings (sizes among them),
    step, val loss, history (step, s, train, val), atomically. Under torchrun only rank 0 writes."""
    if torch.distributed.is_initialized() and torch.distributed.get_rank():
        return
    config = {k: v for k, v in vars(cfg).items() if k != 'origin'}
    weights = model if isinstance(model, dict) else model.state_dict()
    ckpt = dict(model=weights, chars=chars, config=config, step=step, val_loss=val_loss, history=list(history),
                **more)
    save_atomic(path, lambda f: torch.save(ckpt, f))


def load(path, device, build, flash=False):
    """The model saved at path, built by build (gpt.py's GPTLanguageModel, or a class with its arguments) and
    loaded, and the checkpoint; or a one-line error."""
    ckpt = read(path, device)
    try:
        c = ckpt['config']
        model = build(len(ckpt['chars']), c['n_embd'], c['n_head'], c['n_layer'], c['block_size'], 0.0, flash)
        model.load_state_dict(ckpt['model'])
    except Exception as e:
        raise UserError(f"{path} is not a checkpoint this gpt.py can load ({type(e).__name__}): train a new one")
    return model.to(device), ckpt


def read(path, device='cpu', script='gpt.py'):
    """The checkpoint at path as saved by save (by gpt.py or gpt_mlx.py), or a one-line error."""
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


def save_resume(cfg, model, optimizer, scaler, chars, step, best, history):
    """What --resume needs to go on from this evaluation as if never stopped: the weights, the optimizer's and the
    loss scaler's state, the random generators, beside the checkpoint (resume_path). Rank 0 writes."""
    save(resume_path(cfg.ckpt_path), model, chars, cfg, step, best, history,
         optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=torch.get_rng_state(),
         cuda_rng=torch.cuda.get_rng_state() if cfg.device == 'cuda' else None)


def finish(ckpt_path, history):
    """A run is complete: its resume state goes, and the best model keeps the whole run's history (rank 0)."""
    if torch.distributed.is_initialized() and torch.distributed.get_rank():
        return
    os.remove(resume_path(ckpt_path))
    best = torch.load(ckpt_path, weights_only=True)
    save_atomic(ckpt_path, lambda f: torch.save({**best, 'history': list(history)}, f))


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


def chars_needed(cfg):
    """The vocabulary that --init_from's checkpoint, or --resume's state, needs the text to have (None: any)."""
    path = cfg.init_from or (resume_path(cfg.ckpt_path) if cfg.resume else '')
    if not path or not os.path.isfile(path):
        return None
    try:
        return torch.load(path, map_location='cpu', weights_only=True)['chars']
    except Exception:
        return None  # not a checkpoint: said in one line when it is loaded


def load_model(path, device, chars, build, what, script, defaults={}):
    """The model an exercise saved at path (built by build(settings), its vocabulary chars) and its settings, with
    defaults for settings older checkpoints lack; or a one-line error naming what it should hold and script."""
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}: train one first with `python exercises/{script}`")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if ckpt['chars'] != chars:
            raise ValueError('another vocabulary')
        cfg = argparse.Namespace(**{**defaults, **ckpt['config']})
        model = build(cfg)
        model.load_state_dict(ckpt['model'])
    except Exception:
        raise UserError(f"{path} holds no {what}: train one with `python exercises/{script}`, "
                        "or set --ckpt_path") from None
    return model.to(device), cfg
