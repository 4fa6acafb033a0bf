"""The memory-mapped cache behind load_data: the same ids and batches as encoding the text in memory, rebuilt when
the text changes, and the same one-line errors for bad input."""
import os

import pytest
import torch
from hypothesis import given, settings, strategies as st

import extras
import gpt
from conftest import TINY, assert_user_error, run_script


def in_memory(text):
    """The lecture's way: the whole text in memory, encoded to a tensor of ids."""
    chars = sorted(set(text))
    return chars, torch.tensor(gpt.tokenizer(chars)[0](text), dtype=torch.long)


def test_the_cache_gives_the_lectures_vocabulary_split_and_batches(data_path, text):
    chars, splits = gpt.load_data(str(data_path), 256)
    ref_chars, data = in_memory(text)
    n = int(0.9 * len(data))
    assert chars == ref_chars and splits['train'].dtype == torch.uint8  # 65 characters: one byte each
    assert os.path.getsize(str(data_path) + '.cache') < len(text) + 4096
    for split, ref in (('train', data[:n]), ('val', data[n:])):
        assert torch.equal(splits[split].long(), ref)
        for seed in range(3):
            got = gpt.get_batch(splits[split], 16, 256, 'cpu', torch.Generator().manual_seed(seed))
            want = gpt.get_batch(ref, 16, 256, 'cpu', torch.Generator().manual_seed(seed))
            assert all(torch.equal(a, b) and a.dtype == torch.long for a, b in zip(got, want))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=st.text(min_size=1, max_size=300), chunk_bytes=st.integers(1, 9))
def test_any_text_in_any_chunks_encodes_as_in_memory(tmp_path_factory, text, chunk_bytes):
    """Characters of 1 to 4 UTF-8 bytes, cut anywhere by the chunks, come out as the in-memory tokenizer's ids."""
    path = tmp_path_factory.mktemp('text') / 't.txt'
    path.write_bytes(text.encode('utf-8'))  # bytes: no newline translation
    chars, data = extras.corpus.encode_file(str(path), chunk_bytes)
    ref_chars, ref = in_memory(text)
    assert chars == ref_chars and torch.equal(data.long(), ref)


def test_a_vocabulary_over_256_characters_takes_two_bytes(tmp_path):
    text = ''.join(map(chr, range(0x400, 0x400 + 300))) * 3 + 'abc\n'
    (tmp_path / 't.txt').write_text(text, encoding='utf-8')
    chars, data = extras.corpus.encode_file(str(tmp_path / 't.txt'))
    assert data.dtype == torch.uint16 and len(chars) == 304
    assert torch.equal(data.long(), in_memory(text)[1])


def test_a_changed_text_is_encoded_again_never_read_stale(tmp_path):
    path = tmp_path / 't.txt'
    path.write_text('abcd' * 100, encoding='utf-8')
    chars, data = extras.corpus.encode_file(str(path))
    assert chars == list('abcd')
    stat = path.stat()
    path.write_text('abce' * 100, encoding='utf-8')  # same size; and the old modification time put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    chars, data = extras.corpus.encode_file(str(path))
    assert chars == list('abce') and torch.equal(data.long(), in_memory('abce' * 100)[1])
    path.write_text('xyz' * 100, encoding='utf-8')  # another size
    assert extras.corpus.encode_file(str(path))[0] == list('xyz')
    cache = tmp_path / 't.txt.cache'
    cache.write_bytes(cache.read_bytes()[:-10])  # a damaged cache (cut short) is rebuilt too
    chars, data = extras.corpus.encode_file(str(path))
    assert chars == list('xyz') and len(data) == 300 and cache.stat().st_size > 300


def test_a_bad_byte_in_the_middle_is_found_in_one_read_and_leaves_no_cache(tmp_path, monkeypatch):
    path = tmp_path / 'big.txt'
    good = 'Ünïcödé and ASCII text. ' * 4000
    path.write_bytes(good.encode('utf-8') + b'\xff' + good.encode('utf-8'))
    reads = []
    monkeypatch.setattr(extras.corpus, 'code_points', lambda *a, f=extras.corpus.code_points: reads.append(1) or f(*a))
    offset = len(good.encode('utf-8'))
    with pytest.raises(extras.errors.UserError, match=rf"not UTF-8 text \(bad byte at offset {offset}\)"):
        extras.corpus.encode_file(str(path), chunk_bytes=1000)
    assert reads == [1] and not (tmp_path / 'big.txt.cache').exists() and os.listdir(tmp_path) == ['big.txt']


def test_a_bad_byte_past_the_first_chunk_is_one_line_from_the_command_line(tmp_path):
    text = ('To be, or not to be: that is the question. ' * 400000).encode()  # 17 MB: more than one 16 MiB chunk
    (tmp_path / 'my.txt').write_bytes(text + b'caf\xe9' + text[:1000])
    assert_user_error(run_script('gpt.py', *TINY, '--input_file=my.txt', cwd=tmp_path), 1, 'my.txt', 'not UTF-8',
                      f'offset {len(text) + 3}')
    assert sorted(os.listdir(tmp_path)) == ['my.txt']
