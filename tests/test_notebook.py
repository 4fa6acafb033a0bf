"""gpt-dev.ipynb, the video's first hour: executed top to bottom on a fresh copy, its values checked."""
import json
import os
import re
import shutil

import nbformat
from nbclient import NotebookClient
import torch

from conftest import CPU, ROOT

# appended to the copy: the notebook's own variables, as the last cell's output
PROBE = """import json
print(json.dumps(dict(length=len(text), vocab=vocab_size, round_trip=decode(encode("hii there")),
    hii=encode("hii there"), untrained=untrained_loss, bigram_val=bigram_val,
    table=list(bigram_table.shape), table_rows=bigram_table.sum(1).tolist(), q_next=chars[int(after_q.argmax())],
    a=a.tolist(), b=b.tolist(), c=c.tolist(), xbow0=xbow[0].tolist(),
    v12=bool(torch.allclose(xbow, xbow2, atol=1e-6)), v23=bool(torch.allclose(xbow2, xbow3, atol=1e-6)),
    affinities0=raw[0].tolist(), wei4_0=list(pictures.values())[2].tolist(), versions=list(pictures),
    decoder=decoder_mask.tolist(), encoder=encoder_mask.tolist(), cross=list(cross.shape),
    queries=list(decoder_x.shape), keys=list(encoder_out.shape), batched=batched_equals, stages=stage_val,
    v4_head=v4_equals_head, var_scaled=var_scaled, var_unscaled=var_unscaled, head_size=head_size,
    layernorm=layernorm_equals, maps=len(maps), history=len(history_run))))"""
VIDEO = 'https://www.youtube.com/watch?v=kCc8FmEb1nY'
PICTURES = 11  # the bigram's curve and table, the 3x3 toy, versions 2-4, softmax; a trained GPT's heads, losses,
# token embeddings, position similarity, per-character loss; the encoder's and decoder's masks (and, with a ckpt.pt
# beside the notebook, as committed, its run's losses at 1:37:49)
VIDEO_VAL = {'head': 2.4, 'multihead': 2.28, 'ffwd': 2.24, 'residual': 2.08, 'layernorm': 2.06}  # the second hour
SHORT = 500  # the steps a chapter trains in the test (GPT_DEV_ITERS); the notebook states what to expect then
SHORT_VAL = {'head': 2.71, 'multihead': 2.68, 'ffwd': 2.62, 'blocks': 3.12, 'residual': 2.37, 'layernorm': 2.38}


def test_the_notebook_runs_top_to_bottom_and_computes_the_videos_values(data_path, tmp_path, monkeypatch):
    shutil.copy(data_path, tmp_path / 'input.txt')  # a fresh folder: no ckpt.pt, so it trains its small model
    nb = nbformat.read(ROOT / 'gpt-dev.ipynb', as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    monkeypatch.setenv('PYTHONPATH', str(ROOT))  # import gpt, as from the repository's folder
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')  # on the CPU, as CI
    monkeypatch.setenv('GPT_DEV_ITERS', str(SHORT))  # the second hour's chapters, shorter
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if o.output_type == 'error']
    assert errors == []
    v = json.loads(nb.cells[-1].outputs[0]['text'])
    assert v['length'] == 1_115_394 and v['vocab'] == 65
    assert v['round_trip'] == 'hii there' and v['hii'] == [46, 47, 47, 1, 58, 46, 43, 56, 43]  # the video's ids
    assert abs(v['untrained'] - 4.8786) < 1e-3  # the video's batch and its number
    assert 2.4 < v['bigram_val'] < 2.6  # the video: about 2.5
    assert v['table'] == [65, 65] and all(abs(r - 1) < 1e-5 for r in v['table_rows']) and v['q_next'] == 'u'
    # the 3x3 toy: c = a @ b, a's rows averaging b's; the video's b and its 4 and 5.5
    a, b, c = torch.tensor(v['a']), torch.tensor(v['b']), torch.tensor(v['c'])
    assert torch.equal(a, torch.tril(torch.ones(3, 3)) / torch.arange(1, 4)[:, None])
    assert v['b'][:2] == [[2.0, 7.0], [6.0, 4.0]] and v['c'][1] == [4.0, 5.5]
    assert torch.allclose(c, torch.stack([b[:t + 1].mean(0) for t in range(3)]))
    # version 1: row t of xbow[0] is the mean of x[0]'s rows 0 to t
    torch.manual_seed(1337)
    x0, xbow0 = torch.randn(4, 8, 2)[0], torch.tensor(v['xbow0'])  # the notebook's x, drawn again
    assert torch.allclose(xbow0, torch.stack([x0[:t + 1].mean(0) for t in range(8)]), atol=1e-6)
    assert v['v12'] and v['v23'] and v['v4_head'] and v['layernorm']
    # version 4 as the video prints it (unscaled): the masked softmax of the raw affinities, computed here anew
    aff = torch.tensor(v['affinities0'])
    expected = torch.softmax(aff.masked_fill(torch.tril(torch.ones(8, 8)) == 0, float('-inf')), dim=-1)
    assert torch.allclose(torch.tensor(v['wei4_0']), expected, atol=1e-6)
    assert torch.allclose(torch.tensor(v['wei4_0'][2][:3]), torch.tensor([0.2088, 0.1646, 0.6266]), atol=1e-4)  # video
    assert 0.8 < v['var_scaled'] < 1.25 and 0.8 * v['head_size'] < v['var_unscaled'] < 1.25 * v['head_size']
    assert v['maps'] == 2 * CPU['n_head'] and v['history'] == 6  # every head of the small model; 6 evaluations
    assert [name.split(':')[0] for name in v['versions']] == ['version 2', 'version 3', 'version 4']
    assert v['stages'].keys() == SHORT_VAL.keys()  # every chapter from 1:19:11 to 1:32:51, in the video's order
    assert all(abs(v['stages'][s] - SHORT_VAL[s]) < 0.1 for s in SHORT_VAL), v['stages']
    # encoder vs decoder: the masks differ exactly above the diagonal; cross-attention has the queries' length
    differ = torch.tensor(v['encoder']) != torch.tensor(v['decoder'])
    assert torch.equal(differ, torch.triu(torch.ones(8, 8, dtype=torch.bool), diagonal=1))
    assert v['cross'][:2] == v['queries'][:2] == [1, 5] and v['keys'][1] == 8 and v['batched']
    pictures = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    assert pictures == PICTURES
    assert sorted(os.listdir(tmp_path)) == ['input.txt', 'input.txt.cache', 'notebook.pt']


def test_the_committed_notebook_shows_a_real_run_and_links_every_chapter():
    """Committed with the outputs of a whole run, pictures included, and no error (so GitHub shows them); each
    heading links its chapter's moment in the video, or says that it goes beyond the video."""
    nb = nbformat.read(ROOT / 'gpt-dev.ipynb', as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    silent = [c for c in code if not c.outputs]  # only the second hour's class definitions print nothing
    assert silent and all(any(t.startswith('stage:') for t in c.metadata.get('tags', [])) for c in silent)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # top to bottom, once
    assert not any(o.output_type == 'error' for c in code for o in c.outputs)
    assert sum('image/png' in o.get('data', {}) for c in code for o in c.outputs) == PICTURES + 1  # ckpt.pt's run
    texts = [''.join(o.get('text', '') for o in c.outputs) for c in code]
    samples = next(t for t in texts if '--- untrained:' in t)  # untrained, 500 steps, a whole gpt.py run
    table = dict(re.findall(r'^(\w+) +val ([\d.]+) +the video', next(t for t in texts if 'layernorm  val' in t), re.M))
    assert table.keys() >= VIDEO_VAL.keys()  # the committed run: 5000 steps a chapter, as the video's
    assert all(abs(float(table[s]) - VIDEO_VAL[s]) < 0.1 for s in VIDEO_VAL), table
    assert [line.split(',')[0] for line in samples.splitlines() if line.startswith('--- ')] == [
        '--- untrained:', '--- after 500 steps:', '--- the whole run in ckpt.pt']
    headings = [line for c in nb.cells if c.cell_type == 'markdown' for line in c.source.splitlines()
                if line.startswith('## ')]
    chapters = [h for h in headings if f'({VIDEO}&t=' in h]
    assert len(chapters) >= 20 and all(h in chapters or h.startswith('## Beyond the video')
                                       or h == '## Where the video goes on' for h in headings), headings
    seconds = [int(re.search(r'&t=(\d+)s', h).group(1)) for h in chapters]
    assert seconds == sorted(seconds) and seconds[0] == 0  # in the video's order, from the intro


def test_the_readme_maps_all_30_chapters_in_order_with_every_notebook_heading():
    rows = re.findall(r'^\| (?:(\d+):)?(\d+):(\d\d) ', (ROOT / 'README.md').read_text(encoding='utf-8'), re.M)
    seconds = [int(h or 0) * 3600 + int(m) * 60 + int(s) for h, m, s in rows]
    assert len(seconds) == 30 and seconds == sorted(seconds) and seconds[0] == 0  # the video's 30 chapters
    nb = nbformat.read(ROOT / 'gpt-dev.ipynb', as_version=4)
    headings = {int(t) for c in nb.cells if c.cell_type == 'markdown'
                for t in re.findall(r'^## \[.*?&t=(\d+)s', c.source, re.M)}
    assert headings <= set(seconds), sorted(headings - set(seconds))
