"""The real download code, against an HTTP server on 127.0.0.1 (never the internet)."""
import hashlib
import os
import socket

import pytest

import extras
import gpt
from conftest import BODY, assert_user_error, run_script


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_download_success_writes_the_checked_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(extras.corpus, 'DATA_URL', server)
    monkeypatch.setattr(extras.corpus, 'DATA_SHA256', hashlib.sha256(BODY.encode()).hexdigest())
    path = tmp_path / 'input.txt'
    chars, splits = gpt.load_data(str(path), 8)  # missing default file: downloaded
    assert path.read_text(encoding='utf-8') == BODY
    assert chars == sorted(set(BODY)) and len(splits['train']) + len(splits['val']) == len(BODY)
    assert sorted(os.listdir(tmp_path)) == ['input.txt', 'input.txt.cache']  # no temporary file left behind


def test_checksum_mismatch_is_an_error_and_leaves_no_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(extras.corpus, 'DATA_URL', server)  # the real checksum of tiny Shakespeare won't match BODY
    path = tmp_path / 'input.txt'
    with pytest.raises(extras.errors.UserError, match='wrong SHA-256'):
        extras.corpus.download(str(path))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('url', ['http://127.0.0.1:{port}/input.txt', '{server}/missing'])
def test_server_down_or_404_is_a_clear_error(server, tmp_path, monkeypatch, url):
    url = url.format(port=free_port(), server=server.rsplit('/', 1)[0])
    monkeypatch.setattr(extras.corpus, 'DATA_URL', url)
    with pytest.raises(extras.errors.UserError) as e:
        extras.corpus.download(str(tmp_path / 'input.txt'))
    assert url in str(e.value) and 'by hand' in str(e.value)
    assert os.listdir(tmp_path) == []


def test_offline_first_run_says_what_to_do(tmp_path):
    """`python gpt.py` with no input.txt and no network: one clear message, exit 1, no input.txt."""
    env = dict(os.environ, HTTPS_PROXY=f'http://127.0.0.1:{free_port()}', https_proxy='', NO_PROXY='', no_proxy='')
    env['https_proxy'] = env['HTTPS_PROXY']  # every request goes to a closed port on this machine
    result = run_script('gpt.py', '--device=cpu', cwd=tmp_path, env=env)
    assert_user_error(result, 1, extras.corpus.DATA_URL, 'by hand', 'input.txt')
    assert not (tmp_path / 'input.txt').exists() and os.listdir(tmp_path) == []
