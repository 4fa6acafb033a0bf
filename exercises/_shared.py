"""What the exercises share: their settings, read from their own top lines the way gpt.py reads its own."""
import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import extras  # noqa: E402

# gpt.py's CPU settings as they were when EX3's and EX4's results were measured; the CPU
# settings have since taken batch 48, learning rate 2e-3 and 10 evaluation batches
CPU_AS_MEASURED = ['--settings=cpu', '--batch_size=16', '--learning_rate=3e-3', '--eval_iters=20']


def exercise_settings(path, values, argv, description, at_least_1=(), follow=None):
    """An exercise's settings (parse_settings of its own top lines), its device chosen, --seeds (where it has them) as a
    list of integers, and the settings named in at_least_1 checked: (parser, settings). follow(settings): the values
    that follow from other settings ({name: value}), taken by each one not given on the command line, and printed."""
    p, defaults, given = extras.parse_settings(path, values, argv, description)
    c = argparse.Namespace(**{**defaults, **given})
    if follow:
        taken = {k: v for k, v in follow(c).items() if k not in given and v != defaults[k]}
        if taken:
            print(f"following from the other settings: {', '.join(f'{k}={v!r}' for k, v in taken.items())} "
                  "(give one on the command line to change it)")
        vars(c).update(taken)
    c.device = extras.choose_device(c.device, p)
    if 'seeds' in defaults:
        try:
            c.seeds = [int(s) for s in c.seeds.split(',')]
        except ValueError:
            p.error(f"--seeds must be integers separated by commas, like 1337,42, not {c.seeds!r}")
    for name in at_least_1:
        if getattr(c, name) < 1:
            p.error(f"--{name} must be 1 or more, not {getattr(c, name)}")
    return p, c


def load_model(path, device, chars, build, what, script, defaults={}):
    """The model an exercise saved at path (built by build(settings), its vocabulary chars) and its settings, with
    defaults for settings older checkpoints lack; or a one-line error naming what it should hold and script."""
    if not os.path.exists(path):
        raise extras.UserError(f"no checkpoint at {path}: train one first with `python exercises/{script}`")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if ckpt['chars'] != chars:
            raise ValueError('another vocabulary')
        cfg = argparse.Namespace(**{**defaults, **ckpt['config']})
        model = build(cfg)
        model.load_state_dict(ckpt['model'])
    except Exception:
        raise extras.UserError(f"{path} holds no {what}: train one with `python exercises/{script}`, "
                            "or set --ckpt_path") from None
    return model.to(device), cfg
