"""A run is never silent for long: between evaluations a progress line (step, time a step, time left) at least every
extras.progress.EVERY seconds; on a terminal it overwrites itself and the next line wipes it."""
import argparse
import io
import re

import extras
import gpt
from conftest import TINY, call


def test_progress_lines_come_between_evaluations_which_stay_as_they_were(data_path, tmp_path, monkeypatch):
    monkeypatch.setattr(extras.progress, 'EVERY', 0.0)  # a line after every step
    monkeypatch.chdir(tmp_path)
    out = call(gpt.main, *TINY, f'--input_file={data_path}').stdout
    progress = re.findall(r'^step (\d+) of 20: ([\d,]+) ms a step, (\d+) s left$', out, re.M)
    assert [int(p[0]) for p in progress] == list(range(1, 21))  # not a terminal: whole lines
    assert all(int(p[2]) < 60 for p in progress)
    evals = re.findall(r'^step (\d+): train loss [\d.]+, val loss [\d.]+, [\d.]+s', out, re.M)
    assert evals == ['0', '10', '20']


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_progress_line_is_overwritten(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr('sys.stdout', screen)
    monkeypatch.setattr(extras.progress, 'EVERY', 0.0)
    cfg = argparse.Namespace(batch_size=2, block_size=4, max_iters=100, eval_interval=50, device='cpu',
                             ckpt_path='ckpt.pt')
    clock = extras.progress.Clock(cfg)
    clock.report(0, {'train': 4.0, 'val': 4.1})
    clock.stepped(0)
    clock.stepped(1)
    clock.report(2, {'train': 3.0, 'val': 3.1})
    text = screen.getvalue()
    first = 'step 1 of 100: '
    assert text.startswith('step 0: train loss 4.0000, val loss 4.1000, ') and first in text
    line = text[text.index(first):text.index('\r')]  # no newline after a progress line: \r brings it back
    assert '\n' not in line and re.fullmatch(r'step 1 of 100: [\d,]+ ms a step, \d+ s left', line)
    assert re.search(r'\r {20,}\rstep 2 of 100: ', text)  # the next one wipes it first
    assert re.search(r'\r {20,}\rstep 2: train loss 3.0000, val loss 3.1000, [\d.]+s, [\d,]+ tokens/s\n$', text)
    assert extras.progress.clock(42.4) == '42 s' and extras.progress.clock(185) == '3 min 5 s'
    assert extras.progress.clock(4800) == '1 h 20 min'
