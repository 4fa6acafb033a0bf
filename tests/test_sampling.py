"""Sampling: the streaming sampler gives exactly the lecture's generate's characters, for any model built
from gpt.py's classes (an exercise's changed attention too); several samples in one batch."""
import re

import pytest
import torch

import extras
import gpt
from conftest import call, interrupt, run_script, start_script

import ex4_literature


def lecture(model, idx, n, seed):
    torch.manual_seed(seed)
    return model.eval().generate(idx, n)[:, idx.shape[1]:]


def streamed(model, idx, n, seed, temperature=1.0, top_k=None):
    torch.manual_seed(seed)
    return torch.stack(list(extras.sampling.sample_stream(model, idx, n, temperature, top_k)), dim=1)


def models():
    """gpt.py's model, without blocks and with three, and ex4's rotary + QK-norm variant, whose heads differ."""
    torch.manual_seed(0)
    cfg = extras.config.parse_config(['--device=cpu', '--n_embd=32', '--n_head=4', '--n_layer=2', '--block_size=16'],
                                     vars(gpt))
    yield 'rope+qknorm', ex4_literature.build('rope+qknorm', 65, cfg)
    for n_layer in (0, 3):
        yield f'{n_layer} blocks', gpt.GPTLanguageModel(65, 32, 4, n_layer, 16, dropout=0.3)


@pytest.mark.parametrize('name, model', list(models()))
def test_the_streaming_sampler_draws_generates_tokens(name, model):
    """Prompts shorter than block_size (then the context passes block_size), exactly block_size, and longer
    (cropped at once); several seeds and batch rows: the same tokens as generate, one by one; dropout off."""
    model.train()
    for seed in range(3):
        for prompt_len in (1, 7, 16, 41):
            idx = torch.randint(65, (2, prompt_len))
            want = lecture(model, idx, 40, seed)
            model.train()
            assert torch.equal(streamed(model, idx, 40, seed), want), (name, seed, prompt_len)
            assert model.training  # left as it was
    assert list(extras.sampling.sample_stream(model, idx, 0)) == []


def test_top_k_1_is_the_argmax_whatever_the_temperature():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 4, 1, 16, 0.0).eval()
    idx = torch.randint(65, (2, 3))
    for temperature in (0.5, 1.0, 2.0):
        got = streamed(model, idx, 30, seed=int(temperature * 10), temperature=temperature, top_k=1)
        want = idx
        for _ in range(30):
            want = torch.cat([want, model(want[:, -16:])[0][:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(got, want[:, 3:])


@pytest.fixture
def trained(tiny_run):
    """The folder of the tiny training run the tests share (conftest.py)."""
    return tiny_run[0]


def test_greedy_text_from_the_command_line_is_the_lectures_argmax_loop(trained):
    """In the default precision (float32), 1000 characters: the context passes block_size 16 many times."""
    result = run_script('gpt.py', '--sample', '--top_k=1', '--max_new_tokens=1000', '--prompt=ROMEO:', '--device=cpu',
                        cwd=trained)
    assert result.returncode == 0, result.stderr
    text = result.stdout.split('):\n', 1)[1][:-1]  # the prompt, 1000 characters, then the newline print adds
    model, ckpt = extras.checkpoints.load(str(trained / 'ckpt.pt'), 'cpu', gpt.GPTLanguageModel)
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
    model, ckpt = extras.checkpoints.load(str(trained / 'ckpt.pt'), 'cpu', gpt.GPTLanguageModel)
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


def test_temperature_and_top_k_from_the_command_line_reach_generate(trained, monkeypatch):
    """--temperature and --top_k are generate's: top_k keeps only the k likeliest characters at each step."""
    monkeypatch.chdir(trained)
    args = ['--sample', '--device=cpu', '--max_new_tokens=300', '--prompt=KING:']
    plain, cool, narrow = (call(gpt.main, *args, *more).stdout.split('):\n', 1)[1]
                           for more in ([], ['--temperature=0.5'], ['--top_k=2', '--seed=5']))
    assert len({plain, cool, narrow}) == 3
    model, ckpt = extras.checkpoints.load(str(trained / 'ckpt.pt'), 'cpu', gpt.GPTLanguageModel)
    encode, _ = gpt.tokenizer(ckpt['chars'])
    idx = torch.tensor([encode(narrow[:-1])])  # the prompt and 300 characters (print adds the newline)
    assert idx.shape[1] == len('KING:') + 300
    with torch.no_grad():
        for t in range(len('KING:'), idx.shape[1]):  # each character among the two likeliest after its context
            top2 = model.eval()(idx[:, max(0, t - model.block_size):t])[0][0, -1].topk(2).indices.tolist()
            assert idx[0, t].item() in top2, t
