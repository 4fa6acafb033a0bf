"""What gpt.py needs that the video does not build: a learner following the lecture can skip this package.

One job a module, and nothing here imports gpt: what a module needs of a model it is handed.
- config: the settings (the top lines, `--name=value`, the checks, the lines that say which values run);
- errors: one-line errors instead of tracebacks;
- corpus: tiny Shakespeare downloaded and checked; any text encoded once into a memory-mapped cache;
- precision: bfloat16 or float16 autocast where the hardware has it;
- speed: TF32, torch.compile, and torchrun's DistributedDataParallel around the model;
- distributed: torchrun's processes, each on its share of a batch;
- schedule: the learning-rate schedules;
- progress: a run's clock and its printed lines;
- checkpoints: the best model, the state --resume goes on from, fine-tuning's start;
- sampling: generate a token at a time, printed as it comes, and more.txt;
- files: files written whole or not at all;
- arithmetic: what EX2's addition and calculator share (the held-out rule, drawing problems, their loop);
- muon: the Muon optimizer that EX4's two scripts share."""
from extras import arithmetic, checkpoints, config, corpus, distributed, errors, files, precision, progress, sampling
from extras import muon, schedule, speed

__all__ = ['arithmetic', 'checkpoints', 'config', 'corpus', 'distributed', 'errors', 'files', 'muon', 'precision',
           'progress', 'sampling', 'schedule', 'speed']
