"""Sampling: the fast, streaming sampler gives exactly the lecture's characters; several samples in one batch."""
import re

import pytest
import torch

import gpt
from conftest import TINY, interrupt, run_script, start_script


def lecture(model, idx, n, seed, temperature=1.0, top_k=None):
    torch.manual_seed(seed)
    return model.generate(idx, n, temperature, top_k)[:, idx.shape[1]:]


def fast(model, idx, n, seed, temperature=1.0, top_k=None):
    torch.manual_seed(seed)
    return torch.stack(list(gpt.sample_stream(model, idx, n, temperature, top_k)), dim=1)


@pytest.mark.parametrize('n_layer', [0, 1, 3])
def test_the_fast_sampler_draws_the_lectures_tokens_in_float64(n_layer):
    """Prompts shorter than block_size (the cache fills, then the context passes block_size), exactly block_size, and
    longer (cropped at once); several seeds, temperatures, top_k and batch rows: the same tokens, one by one."""
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 4, n_layer, 16, dropout=0.3).double()  # dropout must be off while sampling
    for seed in range(4):
        for prompt_len in (1, 7, 16, 41):
            idx = torch.randint(65, (2, prompt_len))
            for temperature, top_k in ((1.0, None), (0.8, 5), (1.5, 1)):
                want = lecture(model, idx, 60, seed, temperature, top_k)
                got = fast(model, idx, 60, seed, temperature, top_k)
                assert torch.equal(got, want), (seed, prompt_len, temperature, top_k)
    assert model.training  # left as it was
    assert list(gpt.sample_stream(model, idx, 0)) == []


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_path):
    cwd = tmp_path_factory.mktemp('sampling')
    result = run_script('gpt.py', *TINY, '--max_iters=60', '--eval_interval=30', f'--input_file={data_path}', cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd


def test_greedy_text_from_the_command_line_is_the_lectures_argmax_loop(trained):
    """In the default precision (float32), 1000 characters: the context passes block_size 16 many times."""
    result = run_script('gpt.py', '--sample', '--top_k=1', '--max_new_tokens=1000', '--prompt=ROMEO:', '--device=cpu',
                        cwd=trained)
    assert result.returncode == 0, result.stderr
    text = result.stdout.split('):\n', 1)[1][:-1]  # the prompt, 1000 characters, then the newline print adds
    model, ckpt = gpt.load_checkpoint(str(trained / 'ckpt.pt'), 'cpu', flash=False)
    encode, decode = gpt.tokenizer(ckpt['chars'])
    idx = torch.tensor([encode('ROMEO:')])
    with torch.no_grad():
        for _ in range(1000):  # the lecture's loop, with argmax in place of sampling
            logits, _ = model.eval()(idx[:, -model.block_size:])
            idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert text == decode(idx[0].tolist())


def test_num_samples_prints_independent_samples_one_after_another(trained):
    result = run_script('gpt.py', '--sample', '--num_samples=3', '--prompt=KING:', '--max_new_tokens=30',
                        '--device=cpu', cwd=trained)
    assert result.returncode == 0, result.stderr
    parts = re.split(r'^-{30} sample (\d) of 3\n', result.stdout.split('):\n', 1)[1], flags=re.M)
    assert parts[0] == '' and parts[1::2] == ['1', '2', '3']
    samples = [p.rstrip('\n') for p in parts[2::2]]
    assert all(s.startswith('KING:') and len(s) == len('KING:') + 30 for s in samples), samples
    assert len(set(samples)) == 3  # independent draws
    torch.manual_seed(gpt.seed)  # as gpt.py does before it builds the model (its init draws from the generator)
    model, ckpt = gpt.load_checkpoint(str(trained / 'ckpt.pt'), 'cpu', flash=False)
    encode, decode = gpt.tokenizer(ckpt['chars'])
    want = model.generate(torch.tensor([encode('KING:')] * 3), 30)[:, 5:]  # the same batch through the lecture's loop
    assert samples == ['KING:' + decode(row) for row in want.tolist()]


def test_characters_appear_while_the_sample_is_written_and_ctrl_c_stops_quietly(trained):
    proc = start_script('gpt.py', '--sample', '--max_new_tokens=1000000', '--device=cpu', cwd=trained)
    for line in proc.stdout:
        if line.startswith('sampling from'):
            break
    first = proc.stdout.read(200)  # returns long before a million characters are sampled: they stream
    assert len(first) == 200 and proc.poll() is None
    interrupt(proc)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == '\ninterrupted\n', err
