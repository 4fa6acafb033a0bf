"""Anywhere a learner runs it: the tests find their data on a fresh clone, and gpt.py gets by without each
platform-specific feature (each one taken away here as the system that lacks it would)."""
import builtins
import hashlib
import mmap
import os
import subprocess
import sys

import pytest
import torch

import extras
import gpt
from conftest import BODY, ROOT, TINY, assert_user_error, find_tiny_shakespeare, run_script

import ex3_pretrain_finetune as ex3


def test_the_tests_find_tiny_shakespeare_in_order_and_download_it_once(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extras.corpus, 'DATA_URL', server)  # the local server plays the internet: it serves BODY
    monkeypatch.setattr(extras.corpus, 'DATA_SHA256', hashlib.sha256(BODY.encode()).hexdigest())
    shared, local, downloaded = tmp_path / 'shared.txt', tmp_path / 'input.txt', tmp_path / 'dl' / 'ts.txt'
    where = dict(shared=shared, local=local, downloaded=downloaded)
    for path in (shared, local):
        path.write_text(BODY, encoding='utf-8')
    assert find_tiny_shakespeare(**where) == (shared, None)  # 1. ../shared (CI)
    shared.unlink()
    assert find_tiny_shakespeare(**where) == (local, None)   # 2. input.txt, if it is tiny Shakespeare
    local.write_text('my own text, not tiny Shakespeare', encoding='utf-8')
    path, how = find_tiny_shakespeare(**where)               # 3. else downloaded, its checksum checked
    assert path == downloaded and downloaded.read_text(encoding='utf-8') == BODY
    assert how == f"tiny Shakespeare was downloaded to {downloaded} (once; the tests reuse it)"
    assert local.read_text(encoding='utf-8') == 'my own text, not tiny Shakespeare'  # the learner's file untouched
    monkeypatch.setattr(extras.corpus, 'DATA_URL', server.rsplit('/', 1)[0] + '/gone')  # offline from now on
    assert find_tiny_shakespeare(**where) == (downloaded, None)  # the earlier download is reused
    downloaded.unlink()
    with pytest.raises(extras.errors.UserError) as e:
        find_tiny_shakespeare(**where)
    assert str(e.value) == (f"the tests need tiny Shakespeare and could not download it: save "
                            f"{extras.corpus.DATA_URL} as {local} (or run `python gpt.py` once online), "
                            "then run the tests again")
    assert not downloaded.exists()


def test_a_whole_run_without_any_platform_feature(data_path, tmp_path, monkeypatch, capsys):
    """No resource module (Windows), no madvise (Windows), a cache that cannot be replaced while mapped (Windows),
    torch.compile failing (no compiler or Triton), no native bfloat16."""
    real_import, real_replace = builtins.__import__, os.replace
    def no_resource(name, *args, **kw):
        if name == 'resource':
            raise ImportError("No module named 'resource'")
        return real_import(name, *args, **kw)
    def replace(src, dst):
        if str(dst).endswith('.cache'):
            raise PermissionError(13, 'The process cannot access the file because it is being used')
        return real_replace(src, dst)
    def broken_compile(model, **kw):
        raise RuntimeError('Compiler: cl is not found')
    monkeypatch.setattr(builtins, '__import__', no_resource)
    monkeypatch.delattr(mmap, 'MADV_RANDOM', raising=False)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(torch, 'compile', broken_compile)
    monkeypatch.setattr(torch.cpu, '_is_avx512_bf16_supported', lambda: False)
    (tmp_path / 'text.txt').write_bytes(data_path.read_bytes())  # a fresh copy: its cache must be built here
    monkeypatch.chdir(tmp_path)
    gpt.main([*TINY, '--compile=True', '--input_file=text.txt'])
    out = capsys.readouterr().out
    assert 'torch.compile failed (RuntimeError); training without it' in out
    assert 'peak memory not measured on this system; best val loss' in out
    assert sorted(os.listdir(tmp_path)) == ['ckpt.pt', 'more.txt', 'text.txt']  # no cache: the ids stayed in memory
    assert len((tmp_path / 'more.txt').read_text(encoding='utf-8')) == 301
    chars, data = extras.corpus.encode_file('text.txt')
    assert len(chars) == 65 and len(data) == 1_115_394 and data.dtype == torch.uint8


def test_a_console_that_cannot_show_a_character_shows_a_question_mark(data_path, tmp_path):
    mine = 'Ünïcödé is fine: ' + 'the quick brown fox jumps over the lazy dog. ' * 40
    (tmp_path / 'mine.txt').write_text(mine, encoding='utf-8')
    env = dict(os.environ, PYTHONIOENCODING='ascii')  # like Windows' cp1252 console, but for every non-ASCII one
    result = run_script('gpt.py', *TINY, '--input_file=mine.txt', '--prompt=Ü', '--max_new_tokens=5', cwd=tmp_path,
                        env=env)
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert result.stdout.rstrip('\n').split('\n')[-2].startswith('?')  # the sample: the prompt, then 5 characters
    assert (tmp_path / 'more.txt').read_text(encoding='utf-8').startswith('Ü')  # files are UTF-8 everywhere


def test_ex3_prepare_without_apt_get_says_what_to_do_instead(monkeypatch, tmp_path):
    monkeypatch.setattr(ex3.shutil, 'which', lambda name: None)  # macOS, Windows: no apt-get, no dpkg-deb
    with pytest.raises(extras.errors.UserError) as e:
        ex3.build_corpus(tmp_path / 'corpus.txt', 'some text')
    assert str(e.value) == ("--prepare takes the corpus from Debian's packages and needs apt-get and dpkg-deb (Debian "
                            "or Ubuntu); on this system use any large UTF-8 text of your own: --corpus=your.txt")
    assert os.listdir(tmp_path) == []


def test_without_mlx_it_says_so_in_one_line(tmp_path):
    hide = (f"import runpy, sys; sys.modules['mlx'] = None; sys.argv = ['gpt_mlx.py']; sys.path[0] = {str(ROOT)!r}; "
            f"runpy.run_path({str(ROOT / 'gpt_mlx.py')!r}, run_name='__main__')")  # as `python gpt_mlx.py` runs
    result = subprocess.run([sys.executable, '-c', hide], cwd=tmp_path, capture_output=True, text=True)
    assert_user_error(result, 1, 'MLX is not installed here', 'use gpt.py')
    assert os.listdir(tmp_path) == []
