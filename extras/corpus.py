"""The text: tiny Shakespeare downloaded and checked, any text encoded once into a memory-mapped cache beside it,
so that a text of any size fits in memory."""
import codecs
import hashlib
import json
import mmap
import os
import tempfile

import numpy as np
import requests
import torch

from extras.errors import UserError
from extras.files import save_atomic

DATA_URL = 'https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt'


DATA_SHA256 = '86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed'


def download(path):
    """Download tiny Shakespeare to path, check its SHA-256, and write it atomically."""
    url = DATA_URL
    print(f"downloading {url} to {path}")
    try:
        r = requests.get(url, timeout=30)
        r.raise_for_status()
    except requests.RequestException as e:
        raise UserError(f"could not download {url} ({type(e).__name__}); offline? "
                        f"Download that file by hand and save it as {path}") from None
    if hashlib.sha256(r.content).hexdigest() != DATA_SHA256:
        raise UserError(f"the file from {url} has the wrong SHA-256, so it was not saved; try again, "
                        f"or download it by hand and save it as {path}")
    save_atomic(path, lambda f: f.write(r.content))


def load_text(path, block_size, need=None):
    """The vocabulary (every character in the text at path, sorted) and the text as their ids, (N,), checked before
    anything is written: enough text for block_size in each split (90% train, 10% val), and the vocabulary need if
    given (fine-tuning, resuming). A missing input.txt is downloaded first: tiny Shakespeare."""
    if not os.path.exists(path):
        if os.path.basename(path) != 'input.txt':
            raise UserError(f"no such file: {path}")
        download(path)

    def check(chars, length):
        n = int(0.9 * length)
        if min(n, length - n) <= block_size:
            raise UserError(f"{path} has {length} characters, too few for block_size {block_size}: each split "
                            f"(90% train, 10% val) needs more than {block_size}; use more text or a smaller "
                            "--block_size")
        if need is not None and list(chars) != list(need):
            raise UserError(f"{path} has other characters than the checkpoint was trained on: fine-tuning and "
                            "resuming need the same ones")
    return encode_file(path, check=check)


def read_text(path, block_size):
    """The text at path as one string, the lecture's way (bigram.py), after load_text's download and checks."""
    load_text(path, block_size)
    with open(path, encoding='utf-8') as f:
        return f.read()


CACHE_MAGIC = b'gpt.py character cache 1\n'


def encode_file(path, chunk_bytes=2**24, check=None):
    """The vocabulary of the text at path and its ids, memory-mapped from a cache rebuilt when the text changes:
    path + '.cache' (in the temp folder if path's folder is read-only), a header (the text's size, mtime, a hash of
    its ends; the vocabulary), then 1 byte an id (2 above 256 characters). Building it reads the text in chunks,
    never whole: once for the vocabulary, which checks the UTF-8, then check(chars, length) if given, before
    anything is written, and once to write the ids. The lecture: chars = sorted(set(text)); encode(text)."""
    cache = path + '.cache'
    if not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        name = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:16]
        cache = os.path.join(tempfile.gettempdir(), f"gpt-{name}.cache")
    source = fingerprint(path)
    header, start = read_cache_header(cache)
    if header is None or header['source'] != source:  # no cache yet, or the text changed since: encode it
        if not source['size']:
            raise UserError(f"{path} is empty: train on a file with some text in it")
        seen, length = np.zeros(0x110000, dtype=bool), 0  # which code points occur, how many characters
        for ids in code_points(path, chunk_bytes):  # pass 1
            seen[ids], length = True, length + len(ids)
        chars = ''.join(map(chr, np.flatnonzero(seen)))  # sorted(set(text))
        if check:
            check(chars, length)
        header = dict(source=source, chars=chars, dtype='uint8' if len(chars) <= 256 else 'uint16', length=length)
        lut = np.zeros(0x110000, dtype=header['dtype'])  # code point -> id
        lut[list(map(ord, chars))] = np.arange(len(chars))
        head = json.dumps(header).encode()

        def write(f):
            f.write(CACHE_MAGIC + len(head).to_bytes(8, 'little') + head)
            for ids in code_points(path, chunk_bytes):  # pass 2
                f.write(lut[ids].tobytes())
        try:
            save_atomic(cache, write)
        except PermissionError:  # Windows: the old cache is still mapped by this process and cannot be replaced
            ids = np.concatenate([lut[ids] for ids in code_points(path, chunk_bytes)])
            return list(chars), torch.from_numpy(ids)
        start = len(CACHE_MAGIC) + 8 + len(head)
    elif check:
        check(header['chars'], header['length'])
    with open(cache, 'rb') as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # copy on write: the file itself never changes
    if hasattr(mapped, 'madvise') and hasattr(mmap, 'MADV_RANDOM'):  # batches read a few bytes at random places:
        mapped.madvise(mmap.MADV_RANDOM)  # read only those pages, none ahead (Windows has no madvise)
    return list(header['chars']), torch.from_numpy(np.frombuffer(mapped, header['dtype'], header['length'], start))


def fingerprint(path):
    """Size, modification time and a hash of the first and last 64 KiB: what tells that a text changed."""
    with open(path, 'rb') as f:
        st = os.fstat(f.fileno())
        ends = f.read(2**16)
        f.seek(max(0, st.st_size - 2**16))
        ends += f.read()
    return dict(size=st.st_size, mtime_ns=st.st_mtime_ns, ends=hashlib.sha256(ends).hexdigest())


def read_cache_header(cache):
    """The header of a complete cache file and where its ids start, or (None, 0)."""
    try:
        with open(cache, 'rb') as f:
            if f.read(len(CACHE_MAGIC)) != CACHE_MAGIC:
                return None, 0
            head = f.read(int.from_bytes(f.read(8), 'little'))
            header, start = json.loads(head), len(CACHE_MAGIC) + 8 + len(head)
            complete = os.fstat(f.fileno()).st_size == start + header['length'] * np.dtype(header['dtype']).itemsize
            return (header, start) if complete else (None, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0


def code_points(path, chunk_bytes):
    """The text at path as arrays of Unicode code points, chunk by chunk; a UserError at the first byte that is
    not UTF-8."""
    decoder = codecs.getincrementaldecoder('utf-8')()
    offset = 0
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(chunk_bytes)
            pending = len(decoder.getstate()[0])  # bytes of a character cut by the previous chunk
            if chunk and chunk.isascii() and not pending:  # the common case, 5x faster: each byte is its code point
                offset += len(chunk)
                yield np.frombuffer(chunk, dtype=np.uint8)
                continue
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise UserError(f"{path} is not UTF-8 text (bad byte at offset {offset - pending + e.start}): "
                                "save it as UTF-8") from None
            offset += len(chunk)
            if text:
                yield np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
            if not chunk:
                return
