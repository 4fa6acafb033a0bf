"""EX3: pretrain on a large text, then fine-tune on tiny Shakespeare. Does pretraining help?

The video's description: "Find a dataset that is very large, so large that you can't see a gap between
train and val loss. Pretrain the transformer on this data, then initialize with that model and finetune
it on tiny shakespeare with a smaller number of steps and lower learning rate. Can you obtain a lower
validation loss by the use of pretraining?"

The setup: `gpt.py`'s CPU model for every run.
- Pretraining: `gpt.train` on the corpus for pretrain_iters steps.
- Fine-tuning: `gpt.train` on tiny Shakespeare with --init_from the pretrained checkpoint, finetune_iters
  steps at finetune_lr; from scratch: the same steps from random weights. Both report their best val loss
  on tiny Shakespeare's val split, for each seed.

The vocabulary must be tiny Shakespeare's 65 characters, in the same order: accents are dropped, double
quotes become ', and any other character is dropped (`to_vocabulary`). --prepare (Debian or Ubuntu:
apt-get download and dpkg-deb) builds corpus.txt from public-domain English in Debian's packages: the King
James Bible, Jane Austen's novels, the GCIDE dictionary (Webster's 1913) and The Devil's Dictionary, their
paragraphs shuffled; every line that shares 50 characters with tiny Shakespeare is removed (Webster's
quotes it). Any large UTF-8 text of your own works too: --corpus=your.txt.

`python exercises/ex3_pretrain_finetune.py --prepare` builds corpus.txt, then runs the comparison.
Results: docs/results.md."""
import gzip
import pathlib
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402

# settings (each can be changed on the command line: --name=value)
corpus = 'corpus.txt'     # the large pretraining text (any UTF-8 text: mapped onto tiny Shakespeare's characters)
prepare = False           # first build corpus from Debian's packages (see above), then run
seeds = '1337,42'         # comma-separated random seeds: every run once per seed
pretrain_iters = 6000     # training steps on the corpus
finetune_iters = 1500     # training steps on tiny Shakespeare, for fine-tuning and from scratch alike
finetune_lr = 1e-3        # fine-tuning's learning rate (from scratch: 3e-3)
eval_iters = 50           # batches averaged by each loss estimate
device = 'cpu'            # 'cuda', 'mps' or 'cpu' (the model is gpt.py's CPU one on every device)
input_file = 'input.txt'  # tiny Shakespeare (downloaded if this is missing)

PACKAGES = ['bible-kjv', 'bible-kjv-text', 'dict-gcide', 'dict-devil', 'r-cran-janeaustenr']
# a shared string this long counts as overlap with tiny Shakespeare (not a setting: its name is upper case)
OVERLAP = 50


# ----------------------------------------------------------------------------- the corpus
def austen(rdb):
    """Jane Austen's novels from the R package's lazy-load database: zlib blocks of serialized character vectors."""
    raw, pos, books = rdb.read_bytes(), 0, []
    while pos < len(raw):
        d = zlib.decompressobj()
        out = d.decompress(raw[pos + 4:])  # each block: its length (4 bytes), then a zlib stream
        pos = len(raw) - len(d.unused_data)
        i = out.index(b'\x00\x00\x00\x10', 14)  # STRSXP: the book as a vector of lines
        n, i, lines = struct.unpack('>i', out[i + 4:i + 8])[0], i + 8, []
        for _ in range(n):  # each line a CHARSXP: flags, length, bytes
            length = struct.unpack('>i', out[i + 4:i + 8])[0]
            lines.append(out[i + 8:i + 8 + max(length, 0)].decode('utf-8'))
            i += 8 + max(length, 0)
        books.append('\n'.join(lines))
    return '\n\n'.join(books)


def dictionary(dz):
    """A dictd dictionary's text (dictzip is gzip) without its headers, pronunciations and source tags."""
    text = gzip.decompress(dz.read_bytes()).decode('utf-8', errors='replace')
    text = text[text.index('\n\n', text.rindex('00-database')):]  # after the header entries
    text = re.sub(r'\\[^\\\n]*\\', '', text)  # \Ab`di*ca"tion\ pronunciations
    text = re.sub(r'\[(1913 Webster|PJC|WordNet 1\.5|Century Dict\.)[^\]]*\]', '', text)
    return re.sub(r'\n {2,}', '\n', text)  # entries are indented


def to_vocabulary(text, chars):
    """Text in the given characters only: accents dropped, double quotes as ', everything else outside dropped."""
    text = unicodedata.normalize('NFKD', text).replace('"', "'").replace('`', "'").replace('\t', ' ')
    keep = set(chars)
    text = ''.join(c for c in text if c in keep)
    return re.sub(r'\n{3,}', '\n\n', re.sub(r' {2,}', ' ', re.sub(r' +\n', '\n', text)))


def mapped_corpus(path, chars):
    """The text at path mapped onto chars, written beside it as NAME.65.txt: to_vocabulary, then each of chars it
    still lacks appended once, so that its vocabulary is chars exactly, as fine-tuning needs. Returns the new path."""
    out = pathlib.Path(path).with_suffix('.65.txt')  # corpus.txt -> corpus.65.txt
    text = pathlib.Path(path).read_text(encoding='utf-8')
    mapped = to_vocabulary(text, chars)
    missing = ''.join(ch for ch in chars if ch not in set(mapped))
    try:
        extras.files.save_atomic(out, lambda f: f.write((mapped + missing).encode('utf-8')))
    except OSError as e:
        raise extras.errors.UserError(f"could not write {out} ({e.strerror}): copy {path} to a writable "
                                      "folder") from None
    print(f"{path} has other characters than tiny Shakespeare's {len(chars)}: mapped onto them in {out} "
          f"({len(text) - len(mapped):,} characters dropped or merged; {len(missing)} missing ones appended once)")
    return str(out)


def shared_strings(text, other, n=OVERLAP):
    """Which positions of text start an n-character string that also occurs in other (hashes, then checked)."""
    def hashes(s):
        ids = np.frombuffer(s.encode('ascii'), dtype=np.uint8).astype(np.uint64)
        h = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        for j in range(n):  # polynomial hash of each n-character window, modulo 2**64
            h = h * np.uint64(1_000_003) + ids[j:j + len(h)]
        return h
    theirs = set(other[i:i + n] for i in range(len(other) - n + 1))
    candidates = np.flatnonzero(np.isin(hashes(text), hashes(other)))
    return [i for i in candidates.tolist() if text[i:i + n] in theirs]


def build_corpus(path, shakespeare):
    """Download the packages, extract the texts, keep tiny Shakespeare's characters, remove the overlap; write path."""
    chars = sorted(set(shakespeare))
    if not (shutil.which('apt-get') and shutil.which('dpkg-deb')):
        raise extras.errors.UserError("--prepare takes the corpus from Debian's packages and needs apt-get and "
                                      "dpkg-deb (Debian or Ubuntu); on this system use any large UTF-8 text of your "
                                      "own: --corpus=your.txt")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        try:
            subprocess.run(['apt-get', 'download', *PACKAGES], cwd=tmp, check=True, capture_output=True)
            for deb in tmp.glob('*.deb'):
                subprocess.run(['dpkg-deb', '-x', str(deb), str(tmp / 'x')], check=True, capture_output=True)
            kjv = subprocess.run([str(tmp / 'x/usr/bin/bible'), '-p', str(tmp / 'x/usr/lib'), '-m', '8192',
                                  'gen1:1-rev22:21'], check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            raise extras.errors.UserError(f"could not get the corpus from Debian's packages ({e}); this needs apt-get "
                                   "and dpkg-deb (Debian or Ubuntu): use --corpus=FILE with a large text of your "
                                   "own") from None
        parts = {'King James Bible': re.sub(r'(?m)^ +\d+ ', '', kjv),  # without verse numbers
                 'Jane Austen': austen(tmp / 'x/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb'),
                 'GCIDE': dictionary(tmp / 'x/usr/share/dictd/gcide.dict.dz'),
                 "The Devil's Dictionary": dictionary(tmp / 'x/usr/share/dictd/devil.dict.dz')}
    for name, part in parts.items():
        parts[name] = to_vocabulary(part, chars)
        print(f"{name}: {len(part):,} characters, {len(parts[name]):,} in tiny Shakespeare's characters")
    paragraphs = '\n\n'.join(parts.values()).split('\n\n')
    random.Random(0).shuffle(paragraphs)  # mixed, so that the last 10% (val) is like the rest (train)
    text = '\n\n'.join(paragraphs)
    n = int(0.9 * len(shakespeare))
    before = {split: shared_strings(text, s) for split, s in (('val', shakespeare[n:]), ('train', shakespeare[:n]))}
    for split, starts in before.items():
        print(f"overlap with tiny Shakespeare's {split} split: {len(starts):,} positions of the corpus start "
              f"a {OVERLAP}-character string found there ({len({text[i:i + OVERLAP] for i in starts}):,} distinct)")
    covered = np.zeros(len(text) + 1, dtype=np.int64)  # characters inside a shared string
    for i in before['val'] + before['train']:
        covered[i] += 1
        covered[i + OVERLAP] -= 1
    covered = np.cumsum(covered)[:-1] > 0
    lines, kept, start = text.split('\n'), [], 0
    for line in lines:  # drop every line with a character inside a shared string
        if not covered[start:start + len(line)].any():
            kept.append(line)
        start += len(line) + 1
    clean = '\n'.join(kept)
    after = len(shared_strings(clean, shakespeare))
    print(f"removed {len(lines) - len(kept):,} lines ({len(text) - len(clean):,} characters); "
          f"overlap after: {after} shared {OVERLAP}-character strings")
    extras.files.save_atomic(path, lambda f: f.write(clean.encode('utf-8')))
    print(f"wrote {path}: {len(clean):,} characters, {len(set(clean))} distinct")


# ----------------------------------------------------------------------------- the comparison
def train(c, seed, text_file, ckpt, iters, lr, init_from=''):
    """One gpt.train run with gpt.py's CPU values: (best val loss, seconds)."""
    cfg = extras.config.parse_config([f'--device={c.device}', '--settings=cpu', f'--input_file={text_file}',
                                      f'--seed={seed}', f'--ckpt_path={ckpt}', f'--max_iters={iters}',
                                      f'--learning_rate={lr}',
                               f'--eval_interval={max(1, iters // 6)}', f'--eval_iters={c.eval_iters}',
                               f'--init_from={init_from}'], vars(gpt))
    torch.manual_seed(seed)
    start = time.time()
    best = gpt.train(cfg)
    return best, time.time() - start


def main(argv=None):
    """Pretrain, fine-tune and train from scratch for each seed; print the tables."""
    p, c = script_config(__file__, globals(), argv, __doc__,
                                 at_least_1=('pretrain_iters', 'finetune_iters', 'eval_iters'))
    if not 0 < c.finetune_lr < float('inf'):
        p.error(f"--finetune_lr must be a number above 0, like 1e-3, not {c.finetune_lr}")
    shakespeare_chars, ts_splits = gpt.load_data(c.input_file, 64)
    if c.prepare:
        build_corpus(c.corpus, pathlib.Path(c.input_file).read_text(encoding='utf-8'))
    corpus_chars, corpus_splits = gpt.load_data(c.corpus, 64)
    if corpus_chars != shakespeare_chars:  # fine-tuning needs the same vocabulary: any text is mapped onto it
        c.corpus = mapped_corpus(c.corpus, shakespeare_chars)
        corpus_chars, corpus_splits = gpt.load_data(c.corpus, 64)
    cpu = extras.config.parse_config([f'--device={c.device}', '--settings=cpu'], vars(gpt))  # train()'s sizes
    print(f"corpus {c.corpus}: {sum(map(len, corpus_splits.values())):,} characters; pretraining sees "
          f"{c.pretrain_iters * cpu.batch_size * cpu.block_size:,} of them (batch {cpu.batch_size} x context "
          f"{cpu.block_size} x {c.pretrain_iters} steps)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in c.seeds:
            pre = f'{tmp}/pre{seed}.pt'
            print(f"--- seed {seed}: pretraining on {c.corpus}", flush=True)
            _, pre_s = train(c, seed, c.corpus, pre, c.pretrain_iters, 3e-3)
            model, _ = extras.checkpoints.load(pre, c.device, gpt.GPTLanguageModel)
            on_corpus = gpt.estimate_loss(model, corpus_splits, c.eval_iters * 4, 16, 64, c.device)
            zero_shot = gpt.estimate_loss(model, ts_splits, c.eval_iters * 4, 16, 64, c.device)['val']
            print(f"--- seed {seed}: fine-tuning on tiny Shakespeare", flush=True)
            tuned, tuned_s = train(c, seed, c.input_file, f'{tmp}/tuned.pt', c.finetune_iters, c.finetune_lr, pre)
            print(f"--- seed {seed}: from scratch on tiny Shakespeare", flush=True)
            scratch, scratch_s = train(c, seed, c.input_file, f'{tmp}/scratch.pt', c.finetune_iters, 3e-3)
            rows.append((seed, on_corpus, zero_shot, pre_s, tuned, tuned_s, scratch, scratch_s))
    print(f"\nPretraining on {c.corpus}, {c.pretrain_iters} steps: its own train and val loss (no gap), and the "
          "pretrained model on tiny Shakespeare's val split before any fine-tuning")
    print("| seed | corpus train loss | corpus val loss | gap | tiny Shakespeare val, not fine-tuned | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, on, zero, pre_s, *_ in rows:
        gap = on['val'] - on['train']
        print(f"| {seed} | {on['train']:.4f} | {on['val']:.4f} | {gap:+.4f} | {zero:.4f} | {pre_s:.0f} |")
    print(f"\nTiny Shakespeare, {c.finetune_iters} steps each: best val loss")
    print(f"| seed | pretrained, fine-tuned at lr {c.finetune_lr:g} | seconds | from scratch at lr 3e-3 | seconds | "
          "difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, _, _, _, tuned, tuned_s, scratch, scratch_s in rows:
        print(f"| {seed} | {tuned:.4f} | {tuned_s:.0f} | {scratch:.4f} | {scratch_s:.0f} | {tuned - scratch:+.4f} |")
    return rows


if __name__ == '__main__':
    extras.errors.run(main)
