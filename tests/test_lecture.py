"""The lecture's teaching points, as checks that fail if the model gets them wrong."""
import math

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

import extras
import gpt


def test_the_mathematical_trick_three_ways_agree():
    torch.manual_seed(1337)
    B, T, C = 4, 8, 2
    x = torch.randn(B, T, C)
    # version 1: for loops, averaging the past and present tokens
    xbow = torch.zeros(B, T, C)
    for b in range(B):
        for t in range(T):
            xbow[b, t] = x[b, :t + 1].mean(0)
    # version 2: a lower-triangular matrix of weights, as a matmul
    tril = torch.tril(torch.ones(T, T))
    wei = tril / tril.sum(1, keepdim=True)
    xbow2 = wei @ x  # (T,T) @ (B,T,C) -> (B,T,C)
    # version 3: softmax over scores with the future masked to -inf
    wei = F.softmax(torch.zeros(T, T).masked_fill(tril == 0, float('-inf')), dim=-1)
    xbow3 = wei @ x
    assert torch.allclose(xbow, xbow2, atol=1e-6)
    assert torch.allclose(xbow, xbow3, atol=1e-6)
    assert not torch.allclose(xbow[:, 1:], x[:, 1:])  # it really averaged something


def attention_modules(flash):
    torch.manual_seed(0)
    return {
        'Head': gpt.Head(16, 8, 12, 0.0, flash),
        'MultiHeadAttention': gpt.MultiHeadAttention(16, 4, 12, 0.0, flash),
        'Block': gpt.Block(16, 4, 12, 0.0, flash),
    }


@pytest.mark.parametrize('flash', [False, True])
@pytest.mark.parametrize('name', ['Head', 'MultiHeadAttention', 'Block'])
def test_changing_later_tokens_never_changes_earlier_outputs(name, flash):
    module = attention_modules(flash)[name].eval()
    x = torch.randn(2, 12, 16)
    for t in (1, 6, 11):
        y = x.clone()
        y[:, t:] = torch.randn(2, 12 - t, 16)  # rewrite the future from position t on
        out_x, out_y = module(x), module(y)
        assert torch.allclose(out_x[:, :t], out_y[:, :t], atol=1e-6), f"position < {t} saw the future"
        assert not torch.allclose(out_x[:, t:], out_y[:, t:])


@pytest.mark.parametrize('flash', [False, True])
def test_model_is_causal_and_batches_never_communicate(flash):
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 4, 2, 16, 0.0, flash).eval()
    idx = torch.randint(65, (3, 16))
    logits, _ = model(idx)
    later = idx.clone()
    later[:, 10:] = (later[:, 10:] + 1) % 65
    assert torch.allclose(model(later)[0][:, :10], logits[:, :10], atol=1e-5)
    assert not torch.allclose(model(later)[0][:, 10:], logits[:, 10:])
    other = idx.clone()
    other[1:] = torch.randint(65, (2, 16))  # change every other sequence in the batch
    assert torch.allclose(model(other)[0][0], logits[0], atol=1e-5)


def test_fused_attention_matches_the_explicit_math():
    explicit, fused = attention_modules(False), attention_modules(True)
    x = torch.randn(3, 12, 16)
    for name in explicit:
        fused[name].load_state_dict(explicit[name].state_dict())
        assert torch.allclose(explicit[name].eval()(x), fused[name].eval()(x), atol=1e-5), name
    torch.manual_seed(1)
    a = gpt.GPTLanguageModel(65, 32, 4, 2, 16, 0.0, flash=False).eval()
    b = gpt.GPTLanguageModel(65, 32, 4, 2, 16, 0.0, flash=True).eval()
    b.load_state_dict(a.state_dict())
    idx = torch.randint(65, (2, 16))
    assert torch.allclose(a(idx)[0], b(idx)[0], atol=1e-5)


def test_multi_head_attention_runs_each_head_so_an_edit_of_head_forward_changes_the_model(monkeypatch):
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 4, 2, 16, 0.0).eval()
    idx = torch.randint(65, (2, 16))
    before = model(idx)[0]
    calls = []
    forward = gpt.Head.forward
    def edited(self, x):  # as a learner would: the same head, its output scaled
        calls.append(1)
        return forward(self, x) * 2
    monkeypatch.setattr(gpt.Head, 'forward', edited)
    after = model(idx)[0]
    assert len(calls) == 2 * 4  # every head of every block ran
    assert not torch.allclose(before, after)


def test_scaled_attention_keeps_unit_variance():
    torch.manual_seed(0)
    head_size = 64
    q, k = torch.randn(8, 256, head_size), torch.randn(8, 256, head_size)
    unscaled = q @ k.transpose(-2, -1)
    scaled = unscaled * head_size ** -0.5
    assert 0.9 < scaled.var().item() < 1.1
    assert 0.9 * head_size < unscaled.var().item() < 1.1 * head_size


def test_head_scales_by_head_size_not_embedding_size():
    torch.manual_seed(0)
    n_embd, head_size, T = 32, 8, 6
    head = gpt.Head(n_embd, head_size, T, 0.0).eval()
    x = torch.randn(2, T, n_embd)
    q, k, v = head.query(x), head.key(x), head.value(x)
    mask = torch.tril(torch.ones(T, T)) == 0
    def attend(scale):
        return F.softmax((q @ k.transpose(-2, -1) * scale).masked_fill(mask, float('-inf')), dim=-1) @ v
    assert torch.allclose(head(x), attend(head_size ** -0.5), atol=1e-6)
    assert not torch.allclose(head(x), attend(n_embd ** -0.5), atol=1e-4)


def test_lecture_model_has_10_788_929_parameters_and_starts_near_ln_65():
    torch.manual_seed(1337)
    lecture = {name: pair[0] for name, (_, pair) in extras.config.script_settings(gpt.__file__).items() if pair}
    sizes = [lecture[k] for k in ('n_embd', 'n_head', 'n_layer', 'block_size', 'dropout')]
    assert sizes == [384, 6, 6, 256, 0.2]  # the values before `else` at the top of gpt.py
    model = gpt.GPTLanguageModel(65, *sizes)
    assert sum(p.numel() for p in model.parameters()) == 10_788_929
    small = gpt.GPTLanguageModel(65)  # off CUDA the defaults are the CPU's values, after `else`
    assert sum(p.numel() for p in small.parameters()) == (10_788_929 if torch.cuda.is_available() else 420_929)
    idx = torch.randint(65, (4, 64))
    _, loss = model.eval()(idx, torch.randint(65, (4, 64)))
    # about -ln(1/65) = 4.17, a uniform guess; std-0.02 weights leave it a little above (the lecture's step 0: 4.28)
    assert abs(loss.item() - (-math.log(1 / 65))) < 0.15


def test_weights_are_initialised_like_nanogpt():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 64, 4, 2, 32, 0.0)
    for name, p in model.named_parameters():
        if name.endswith('bias') and 'ln' not in name:
            assert torch.all(p == 0), name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.003, name


def test_tokenizer_round_trip_and_vocabulary(text):
    chars = sorted(set(text))
    assert len(chars) == 65
    assert ''.join(chars) == "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    encode, decode = gpt.tokenizer(chars)
    assert encode('hii there') == [46, 47, 47, 1, 58, 46, 43, 56, 43]  # the lecture's example
    assert decode(encode(text[:5000])) == text[:5000]


def test_data_split_and_targets_are_inputs_shifted_by_one(data_path, text):
    chars, splits = gpt.load_data(str(data_path), 8)
    assert len(splits['train']) == int(0.9 * len(text)) and len(splits['train']) + len(splits['val']) == len(text)
    x, y = gpt.get_batch(splits['train'], 4, 8, 'cpu', torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (4, 8)
    starts = torch.randint(len(splits['train']) - 8, (4,), generator=torch.Generator().manual_seed(3))
    for row_x, row_y, i in zip(x, y, starts):  # each row is a chunk of the text; its target, the next chunk
        assert torch.equal(row_x, splits['train'][i:i + 8].long())
        assert torch.equal(row_y, splits['train'][i + 1:i + 9].long())
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_generate_crops_the_context_and_builds_no_graph():
    torch.manual_seed(0)
    model = gpt.GPTLanguageModel(65, 32, 2, 1, 8, dropout=0.0)
    idx = torch.zeros((2, 1), dtype=torch.long)
    out = model.generate(idx, 30)  # longer than block_size 8: works only if the context is cropped
    assert out.shape == (2, 31) and not out.requires_grad and torch.equal(out[:, :1], idx)


def test_learning_rate_schedule():
    from argparse import Namespace
    cfg = Namespace(learning_rate=1e-3, warmup_iters=10, max_iters=110, lr_decay=True)
    assert extras.schedule.get_lr(0, cfg) == pytest.approx(1e-4)  # warmup
    assert extras.schedule.get_lr(9, cfg) == pytest.approx(1e-3)
    assert extras.schedule.get_lr(66, cfg) == pytest.approx(1e-3)  # stable until the last 40% (44 steps) are left
    assert extras.schedule.get_lr(88, cfg) == pytest.approx(0.5e-3)  # then a linear decay
    assert extras.schedule.get_lr(110, cfg) == pytest.approx(0.0)
    constant = Namespace(learning_rate=3e-4, warmup_iters=0, max_iters=110, lr_decay=False)
    assert extras.schedule.get_lr(60, constant) == 3e-4


def test_estimate_loss_uses_fixed_batches_and_restores_train_mode(data_path):
    _, splits = gpt.load_data(str(data_path), 16)
    model = gpt.GPTLanguageModel(65, 32, 2, 1, 16, 0.2)
    first = gpt.estimate_loss(model, splits, 3, 4, 16, 'cpu')
    assert model.training
    assert gpt.estimate_loss(model, splits, 3, 4, 16, 'cpu') == first
    assert set(first) == {'train', 'val'} and all(3.5 < v < 5 for v in first.values())


# ----------------------------------------------------------------------------- the lecture's own classes
class LectureHead(nn.Module):
    """The lecture's gpt.py, its classes as the video writes them (sizes from the globals below)."""
    def __init__(self, head_size):
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)
        self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        k = self.key(x)
        q = self.query(x)
        wei = q @ k.transpose(-2, -1) * k.shape[-1]**-0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        v = self.value(x)
        return wei @ v


class LectureMultiHeadAttention(nn.Module):
    def __init__(self, num_heads, head_size):
        super().__init__()
        self.heads = nn.ModuleList([LectureHead(head_size) for _ in range(num_heads)])
        self.proj = nn.Linear(head_size * num_heads, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        out = torch.cat([h(x) for h in self.heads], dim=-1)
        return self.dropout(self.proj(out))


class LectureFeedFoward(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x):
        return self.net(x)


class LectureBlock(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        head_size = n_embd // n_head
        self.sa = LectureMultiHeadAttention(n_head, head_size)
        self.ffwd = LectureFeedFoward(n_embd)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)

    def forward(self, x):
        x = x + self.sa(self.ln1(x))
        return x + self.ffwd(self.ln2(x))


class LectureGPTLanguageModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
        self.position_embedding_table = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[LectureBlock(n_embd, n_head=n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        tok_emb = self.token_embedding_table(idx)
        pos_emb = self.position_embedding_table(torch.arange(T, device=idx.device))
        x = self.ln_f(self.blocks(tok_emb + pos_emb))
        return self.lm_head(x), None


vocab_size, n_embd, n_head, n_layer, block_size, dropout = 65, 32, 4, 2, 16, 0.2


def test_a_checkpoint_of_gpt_py_loads_into_the_lectures_own_classes_with_the_same_logits(tmp_path):
    """The same state_dict keys (strict loading), the same logits: a learner's model is the lecture's model."""
    import extras
    cfg = extras.config.parse_config(['--device=cpu', f'--n_embd={n_embd}', f'--n_head={n_head}',
                                      f'--n_layer={n_layer}', f'--block_size={block_size}',
                                      f'--ckpt_path={tmp_path / "ckpt.pt"}'], vars(gpt))
    torch.manual_seed(0)
    ours = gpt.GPTLanguageModel(vocab_size, n_embd, n_head, n_layer, block_size, dropout)
    extras.checkpoints.save(cfg.ckpt_path, ours, [chr(32 + i) for i in range(vocab_size)], cfg, 0, 4.0)
    lecture = LectureGPTLanguageModel()
    lecture.load_state_dict(torch.load(cfg.ckpt_path, weights_only=True)['model'])  # strict: every key matches
    idx = torch.randint(vocab_size, (3, block_size))
    assert torch.equal(lecture.eval()(idx)[0], ours.eval()(idx)[0])
