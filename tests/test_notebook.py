"""gpt-dev.ipynb, the video's first hour: executed top to bottom on a fresh copy, its values checked."""
import json
import math
import os
import shutil

import nbformat
from nbclient import NotebookClient

import extras
from conftest import ROOT

# appended to the copy: the notebook's own variables, as the last cell's output
PROBE = """import json
print(json.dumps(dict(length=len(text), vocab=vocab_size, round_trip=decode(encode("hii there")),
    hii=encode("hii there"), untrained=untrained_loss, untrained_mean=untrained_mean, bigram_val=bigram_val,
    v12=bool(torch.allclose(xbow, xbow2, atol=1e-6)), v23=bool(torch.allclose(xbow2, xbow3, atol=1e-6)),
    v4_head=v4_equals_head, var_scaled=var_scaled, var_unscaled=var_unscaled, head_size=head_size,
    layernorm=layernorm_equals, maps=len(maps), history=len(history_run))))"""


def test_the_notebook_runs_top_to_bottom_and_computes_the_videos_values(data_path, tmp_path, monkeypatch):
    shutil.copy(data_path, tmp_path / 'input.txt')  # a fresh folder: no ckpt.pt, so it trains its small model
    nb = nbformat.read(ROOT / 'gpt-dev.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    monkeypatch.setenv('PYTHONPATH', str(ROOT))  # import gpt, as from the repository's folder
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')  # on the CPU, as CI
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert errors == []
    v = json.loads(nb.cells[-1].outputs[0]['text'])
    assert v['length'] == 1_115_394 and v['vocab'] == 65
    assert v['round_trip'] == 'hii there' and v['hii'] == [46, 47, 47, 1, 58, 46, 43, 56, 43]  # the video's ids
    assert abs(v['untrained'] - 4.8786) < 1e-3  # the video's batch and its number
    assert abs(v['untrained_mean'] - (math.log(65) + 0.5)) < 0.1  # N(0, 1) logits: about ln 65 + 1/2
    assert 2.4 < v['bigram_val'] < 2.6  # the video: about 2.5
    assert v['v12'] and v['v23'] and v['v4_head'] and v['layernorm']
    assert 0.8 < v['var_scaled'] < 1.25 and 0.8 * v['head_size'] < v['var_unscaled'] < 1.25 * v['head_size']
    assert v['maps'] == 2 * extras.CPU['n_head'] and v['history'] == 6  # every head of the small model; 6 evaluations
    pictures = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    assert pictures == 5
    assert sorted(os.listdir(tmp_path)) == ['input.txt', 'input.txt.cache', 'notebook.pt']


def test_the_committed_notebook_shows_a_real_run():
    """Committed with the outputs of a whole run, pictures included, and no error (so GitHub shows them)."""
    nb = nbformat.read(ROOT / 'gpt-dev.ipynb', as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(c.outputs for c in code)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # top to bottom, once
    assert not any(o.output_type == 'error' for c in code for o in c.outputs)
    assert sum('image/png' in o.get('data', {}) for c in code for o in c.outputs) == 5
