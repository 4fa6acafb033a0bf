"""The video's last chapter, runnable: from a document completer to an assistant, on a CPU in minutes.

The video (1:48:53): pretraining makes a document completer; ChatGPT then takes three fine-tuning stages:
supervised fine-tuning on demonstrations, a reward model trained on samples that people rank, and
reinforcement learning against that reward model (PPO). "We did not talk about any of the fine-tuning
stages": here are all three, on top of `gpt.py`'s checkpoint.

The task: a prompt `$LM$` and a newline asks for a line that begins with the letter L and ends with the
mark M (`$T?$`: "To be, or not to be?"). The judge is a rule (`judge`): 3 words or more, the capital L,
the mark M. 107 letter-and-mark instructions have at least 5 lines of tiny Shakespeare's train split
that meet them; one in ten is held out, never in a training prompt, and every score is on those.

The stages, each a function below:
1. `sft`: demonstrations (the prompt, then a train-split line that meets it); the loss counts the
   response only (the prompt's targets are -1, as EX2 masks the problem).
2. `train_reward_model`: the SFT model with a scalar head in place of `lm_head`, read at the response's
   first and last characters, trained on pairs of the SFT model's samples ranked by the judge (as people
   rank ChatGPT's), with the loss -log sigmoid(r_chosen - r_rejected).
3. `rl`: a policy gradient against the reward model, never the judge, so that reward hacking can show:
   each sample's advantage is its reward minus its group's mean, plus a KL penalty to the SFT model.
   Not PPO: with one step per batch PPO's ratio is 1 and its gradient is this one, and the group's mean
   replaces the value network (as nanochat's chat_rl and GRPO do).

`python gpt.py` first (its ckpt.pt is the base), then `python exercises/assistant.py --plot=assistant.png`;
`--eval --seed=S` scores the saved pipeline again on other held-out prompts. Results: docs/results.md."""
import copy
import pathlib
import sys
import time
import zlib

import torch
import torch.nn as nn
from torch.nn import functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import extras  # noqa: E402
import gpt  # noqa: E402
from extras.config import script_config  # noqa: E402

# settings (each can be changed on the command line: --name=value)
base = 'ckpt.pt'         # the pretrained document completer: gpt.py's checkpoint
sft_iters = 2000         # supervised fine-tuning steps
sft_lr = 1e-3            # supervised fine-tuning's learning rate at its first step, decayed linearly to 0
batch_size = 32          # demonstrations (SFT), pairs (reward model) or prompts (RL) per step
rm_prompts = 1024        # training prompts the SFT model answers `group` times for the reward model's pairs
rm_iters = 1000          # reward-model training steps
rm_lr = 1e-3             # the reward model's learning rate at its first step, decayed linearly to 0
rl_iters = 300           # reinforcement-learning steps
rl_lr = 1e-4             # the policy's learning rate in RL
rl_temperature = 2.0     # RL samples hotter than the table does, to try wrong letters on training prompts
group = 4                # samples per prompt, for the reward model's pairs and for RL's baseline
kl_coef = 0.2            # weight of the KL to the SFT model in RL's loss
eval_prompts = 500       # held-out prompts each model answers for the table
eval_interval = 50       # during RL, score a quarter of the held-out prompts every this many steps
seed = 1337              # random seed: the samples, the training order, and the held-out draw
device = 'auto'          # 'cuda', 'mps' or 'cpu'; 'auto' takes the first one available
dtype = 'auto'           # 'bfloat16' or 'float32'; auto: bfloat16 where the hardware has it natively
input_file = 'input.txt' # tiny Shakespeare: the demonstrations and the val loss
ckpt_path = 'assistant.pt'  # where the three stages' models are saved
eval = False             # only score the models saved at ckpt_path, on prompts drawn with --seed
plot = ''                # draw RL's curves into this PNG file (needs matplotlib)

# the task's fixed choices (not settings: their names are upper case)
MARKS = '.,?!;'          # the marks a line may be asked to end with
LINE_LENGTHS = (10, 50)  # characters in a demonstration line
MIN_WORDS = 3            # words in a line, at the least (so that "A." is no line)
MIN_LINES = 5            # demonstrations an instruction must have in the train split to be one
MAX_NEW = 52             # characters a response may take (a line of up to 50, its newline, one spare)


# ----------------------------------------------------------------------------- the task and its judge
def prompt(task):
    """The instruction "write a line that begins with the letter task[0] and ends with task[1]", in markers
    tiny Shakespeare never has: $T?$ and a newline asks for a line like "To be, or not to be?"."""
    return f'${task}$\n'


def judge(task, response):
    """The rule: one line ended by a newline, of MIN_WORDS words or more, beginning with the capital letter
    task[0] and ending with the mark task[1]."""
    return met(task, response) == 3


def met(task, response):
    """How many of the instruction's three requirements the response meets: a line (ended by a newline, of
    MIN_WORDS words or more), its first letter, its last mark. The judge ranks samples by it."""
    line, ended, _ = response.partition('\n')
    return (int(bool(ended) and len(line.split()) >= MIN_WORDS) + int(line[:1] == task[0])
            + int(bool(ended) and line[-1:] == task[1]))


def held_out(task):
    """One instruction in ten, fixed by a hash, is never in a training prompt."""
    return zlib.crc32(task.encode()) % 10 == 0


def tasks(text):
    """The instructions and their demonstrations from the train split: ({task: [lines]} to train on, and the
    held-out ones). A task is two characters: the capital letter a line begins with, the mark it ends with."""
    lines = text[:int(0.9 * len(text))].split('\n')  # gpt.py's train split: val's lines are never demonstrations
    found = {}
    for line in lines:
        if (LINE_LENGTHS[0] <= len(line) <= LINE_LENGTHS[1] and len(line.split()) >= MIN_WORDS
                and line[0].isupper() and line[-1] in MARKS):
            found.setdefault(line[0] + line[-1], []).append(line)
    known = {t: ls for t, ls in sorted(found.items()) if len(ls) >= MIN_LINES}
    return ({t: ls for t, ls in known.items() if not held_out(t)},
            {t: ls for t, ls in known.items() if held_out(t)})


# ----------------------------------------------------------------------------- sampling and scoring
@torch.no_grad()
def answer(model, prompts, encode, newline, temperature=1.0):
    """Sample one response to each prompt, all in one batch: (tokens (B,T), prompt lengths, ends).
    Each row's next character comes from the logits at its own last position; as attention is causal,
    what lies after a row's end does not change them, so rows of different lengths share the batch."""
    was_training = model.training
    model.eval()
    B, T = len(prompts), model.block_size
    idx = torch.full((B, T), newline, dtype=torch.long)
    starts = torch.tensor([len(p) for p in prompts])
    for b, p in enumerate(prompts):
        idx[b, :len(p)] = torch.tensor(encode(p))
    ends, done, rows = starts.clone(), torch.zeros(B, dtype=torch.bool), torch.arange(B)
    device = next(model.parameters()).device
    idx = idx.to(device)
    for _ in range(min(MAX_NEW, T - int(starts.max()))):
        logits, _ = model(idx[:, :int(ends.max())])
        probs = F.softmax(logits[rows, ends - 1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs, 1)[:, 0].cpu()
        live = ~done
        idx[rows[live], ends[live]] = nxt[live].to(device)
        ends += live.long()
        done |= nxt == newline
        if done.all():
            break
    model.train(was_training)
    return idx, starts, ends


def responses(idx, starts, ends, decode):
    """The sampled responses as strings."""
    return [decode(idx[b, s:e].tolist()) for b, (s, e) in enumerate(zip(starts.tolist(), ends.tolist()))]


def response_mask(starts, ends, T):
    """(B,T): True at the positions whose next character is the response's (the last prompt character's too)."""
    pos = torch.arange(T)
    return (pos >= starts[:, None] - 1) & (pos < ends[:, None] - 1)


def log_probs(model, idx, ends):
    """The model's log probabilities of every character at every position, in float32: (B,T,vocab)."""
    logits, _ = model(idx[:, :int(ends.max())])
    return F.log_softmax(logits.float(), dim=-1)


def kl(logp, ref_logp, mask):
    """KL(policy || reference) of each response: the exact KL over the vocabulary at each of its positions, summed."""
    per_position = (logp.exp() * (logp - ref_logp)).sum(-1)
    return (per_position * mask[:, :logp.size(1)].to(per_position.device)).sum(-1)


def rewards(reward_model, idx, ends):
    """The reward model's score of each response: its scalar output at the response's first character plus its
    output at the last. Why two places: read at the last character alone, this 2-layer model learned to check
    the mark (the last character) and hardly the first letter, even from pairs that differ in it (`checks` on
    seed 1337's SFT model: letter 54% after 300 steps, 92% after 1000, mark 90-91%; read at both, 100% and 100%
    after 1000); at the first character, the letter is one attention step from the prompt's."""
    out, _ = reward_model(idx[:, :int(ends.max())])
    rows, first = torch.arange(len(ends)), len(prompt('A.'))  # every prompt has the same length
    return (out[rows, first, 0] + out[rows, ends.to(out.device) - 1, 0]).float()


def reward_model_from(model):
    """gpt.py's model with a scalar head in place of lm_head (zero at the start)."""
    head = nn.Linear(model.lm_head.in_features, 1).to(model.lm_head.weight.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model.lm_head = head
    return model


# ----------------------------------------------------------------------------- stage 1: supervised fine-tuning
def demonstrations(train, n, encode, T, generator):
    """n demonstrations as a batch: a random training instruction, a random line that meets it.
    Targets are -1 on the prompt (and past the end): the loss counts the response only."""
    tasks = list(train)
    x = torch.zeros(n, T, dtype=torch.long)
    y = torch.full((n, T), -1, dtype=torch.long)
    for b in range(n):
        t = tasks[torch.randint(len(tasks), (1,), generator=generator)]
        lines = train[t]
        line = lines[torch.randint(len(lines), (1,), generator=generator)]
        p, ids = prompt(t), encode(prompt(t) + line + '\n')
        x[b, :len(ids)] = torch.tensor(ids)
        y[b, len(p) - 1:len(ids) - 1] = torch.tensor(ids[len(p):])  # each response character, predicted
    return x, y


def sft(model, train, text, encode, c):
    """Supervised fine-tuning: the lecture's training loop on demonstrations, the loss on the response only,
    plus the lecture's loss on a batch of tiny Shakespeare, so that the model stays a document completer
    (InstructGPT mixes pretraining batches into its RL the same way). The learning rate decays linearly to 0, as
    the base's did, so that SFT ends settled: at a constant sft_lr SFT cost the document completer about twice
    the val loss, and passed fewer held-out prompts."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.sft_lr)
    g = torch.Generator().manual_seed(c.seed)
    model.train()
    for it in range(c.sft_iters):
        for param_group in optimizer.param_groups:
            param_group['lr'] = c.sft_lr * extras.schedule.factor(it / c.sft_iters, decay='linear')
        xb, yb = demonstrations(train, c.batch_size, encode, model.block_size, g)
        xt, yt = gpt.get_batch(text, c.batch_size, model.block_size, c.device, g)
        with extras.precision.autocast(c.device, c.dtype):
            _, loss = model(xb.to(c.device), yb.to(c.device))
            _, text_loss = model(xt, yt)
        optimizer.zero_grad(set_to_none=True)
        (loss + text_loss).backward()
        optimizer.step()
        if it % max(1, c.sft_iters // 5) == 0 or it == c.sft_iters - 1:
            print(f"SFT step {it}: loss on the responses {loss.item():.4f}, on tiny Shakespeare "
                  f"{text_loss.item():.4f}", flush=True)
    return model


# ----------------------------------------------------------------------------- stage 2: the reward model
def preference_pairs(model, tasks, encode, decode, newline, c, borrow=True):
    """The SFT model answers each prompt `group` times and the judge ranks the answers by the requirements they
    meet: (chosen, rejected) index pairs into the samples, the chosen one meeting more for the same prompt.
    With borrow, each prompt's group also holds the answers to the next prompt of the draw that asks for the same
    mark and another letter, and to the next one that asks for the same letter and another mark, shown as answers
    to this prompt (their first letter, or their mark, is wrong for it). Why: on a training prompt the SFT model
    seldom writes a wrong first letter, so its own answers seldom differ in it, and a reward model that never sees
    a pair differ in the letter does not learn to check it (it ranks a line under its own prompt against the same
    line under a prompt for another letter no better than a coin). The mark: its own answers do differ in it, but
    a reward model can learn which marks go with which training instruction instead of comparing the mark with
    the prompt's, and then it cannot check the mark of a held-out instruction, and RL gains little there.
    Borrowed answers differ from the prompt's own in the one requirement the prompt changed, so the comparison
    is what tells them apart.
    Returns the samples, the pairs, and the share of the SFT model's own answers that pass."""
    asked = [t for t in tasks for _ in range(c.group)]
    idx, starts, ends = answer(model, [prompt(t) for t in asked], encode, newline)
    said = responses(idx, starts, ends, decode)
    rows, row_ends, groups, n = [idx], [ends], [], len(tasks)
    for i, t in enumerate(tasks):
        group = [(i * c.group + a, met(t, said[i * c.group + a])) for a in range(c.group)]
        for kept in ((1, 0) if borrow else ()):  # the same mark and another letter, then the same letter
            lenders = [j % n for j in range(i + 1, i + n)  # the first such prompt after this one, wrapping round
                       if tasks[j % n][kept] == t[kept] and tasks[j % n][1 - kept] != t[1 - kept]]
            if not lenders:
                continue
            lent = slice(lenders[0] * c.group, (lenders[0] + 1) * c.group)
            shown = idx[lent].clone()
            shown[:, :starts[0]] = torch.tensor(encode(prompt(t)))  # every prompt has the same length
            first = sum(len(r) for r in rows)
            group += [(first + a, met(t, said[lent][a])) for a in range(c.group)]
            rows.append(shown)
            row_ends.append(ends[lent])
        groups.append(group)
    pairs = [(a, b) for group in groups for a, rank_a in group for b, rank_b in group if rank_a > rank_b]
    return ((torch.cat(rows), torch.cat(row_ends)), torch.tensor(pairs, dtype=torch.long).view(-1, 2),
            [met(t, s) for t, s in zip(asked, said)].count(3) / len(asked))


def pair_accuracy(reward_model, samples, pairs):
    """How often the reward model scores the chosen sample of a pair above the rejected one."""
    with torch.no_grad():
        r = rewards(reward_model.eval(), *samples)
    return (r[pairs[:, 0]] > r[pairs[:, 1]]).float().mean().item()


def train_reward_model(reward_model, samples, pairs, c):
    """The pairwise loss on the judge's pairs: -log sigmoid(r_chosen - r_rejected). The learning rate decays
    linearly to 0, so that training ends settled: at a constant rm_lr a run can end on a loss spike, and then
    ranks held-out pairs worse."""
    idx, ends = samples
    optimizer = torch.optim.AdamW(reward_model.parameters(), lr=c.rm_lr)
    g = torch.Generator().manual_seed(c.seed)
    reward_model.train()
    for it in range(c.rm_iters):
        for param_group in optimizer.param_groups:
            param_group['lr'] = c.rm_lr * extras.schedule.factor(it / c.rm_iters, decay='linear')
        batch = pairs[torch.randint(len(pairs), (c.batch_size,), generator=g)]
        rows = torch.cat([batch[:, 0], batch[:, 1]])
        with extras.precision.autocast(c.device, c.dtype):
            r = rewards(reward_model, idx[rows], ends[rows])
        chosen, rejected = r.chunk(2)
        loss = -F.logsigmoid(chosen - rejected).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it % max(1, c.rm_iters // 5) == 0 or it == c.rm_iters - 1:
            print(f"reward model step {it}: pairwise loss {loss.item():.4f}", flush=True)
    return reward_model.eval()


# ----------------------------------------------------------------------------- stage 3: reinforcement learning
def rl_step(policy, reference, reward, tasks, optimizer, encode, newline, c):
    """One policy-gradient step: sample `group` responses per prompt, score them with reward(idx, ends), and push
    up the log probability of those above their group's mean, with kl_coef x KL(policy || reference) as a
    penalty. Returns the step's mean reward and mean KL.
    The samples are drawn at rl_temperature (2.0), hotter than the model's own distribution that the update
    pushes, so the gradient is not exactly the policy's (the samples come from a flatter one). Why: at
    temperature 1 the SFT model writes the right first letter on nearly every training prompt, so a group's
    answers share it, their advantages sum to zero, and RL learns nothing about the letter, while what it does
    learn (the mark) wears away the letter on held-out prompts (seed 42: wrong first letters 87 to 137 of 500).
    Hotter, it sometimes writes a wrong one, the reward model marks it down, and the letter is learned."""
    prompts = [prompt(t) for t in tasks for _ in range(c.group)]
    idx, starts, ends = answer(policy, prompts, encode, newline, c.rl_temperature)
    with torch.no_grad():
        r = reward(idx, ends)
        grouped = r.view(-1, c.group)
        advantage = ((grouped - grouped.mean(1, keepdim=True)) / (r.std() + 1e-6)).view(-1)
        with extras.precision.autocast(c.device, c.dtype):
            ref_logp = log_probs(reference.eval(), idx, ends)
    policy.train()
    with extras.precision.autocast(c.device, c.dtype):
        logp = log_probs(policy, idx, ends)
    mask = response_mask(starts, ends, logp.size(1)).to(logp.device)
    targets = idx[:, 1:logp.size(1) + 1]
    if targets.size(1) < logp.size(1):  # the last position of a full context predicts nothing
        targets = F.pad(targets, (0, 1))
    taken = logp.gather(-1, targets[..., None])[..., 0]  # log probability of each sampled character
    logp_response = (taken * mask).sum(-1)
    divergence = kl(logp, ref_logp, mask)
    loss = (-(advantage.to(logp.device) * logp_response) + c.kl_coef * divergence).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return r.mean().item(), divergence.mean().item()


def rl(policy, reference, reward_model, train, test_tasks, encode, decode, newline, c):
    """Reinforcement learning against the reward model; every eval_interval steps the judge, the reward model and
    the KL on a quarter of the held-out prompts. Returns the history [(step, success, reward, KL)].
    kl_coef is 0.2: at 0.1 RL raised the val loss by about half as much again, and the whole pipeline must keep the
    base's val loss within 0.1. A batch of tiny Shakespeare in each RL step's loss, as in SFT, did not help there,
    so RL has none."""
    optimizer = torch.optim.AdamW(policy.parameters(), lr=c.rl_lr)
    tasks, g, history = list(train), torch.Generator().manual_seed(c.seed + 1), []
    prompts_per_step = max(1, c.batch_size // c.group)
    reward = lambda idx, ends: rewards(reward_model, idx, ends)  # noqa: E731
    for it in range(c.rl_iters + 1):
        if it % c.eval_interval == 0 or it == c.rl_iters:
            s = score(policy, reference, reward_model, test_tasks, encode, decode, newline, c)
            history.append((it, s['success'], s['reward'], s['kl']))
            print(f"RL step {it}: held-out success {s['success']:.1%}, reward {s['reward']:+.3f}, "
                  f"KL to SFT {s['kl']:.3f}", flush=True)
        if it == c.rl_iters:
            break
        batch = [tasks[i] for i in torch.randint(len(tasks), (prompts_per_step,), generator=g)]
        rl_step(policy, reference, reward, batch, optimizer, encode, newline, c)
    return history


# ----------------------------------------------------------------------------- measuring a model
def score(model, reference, reward_model, tasks, encode, decode, newline, c):
    """On held-out prompts (one response each): the judge's success rate, the reward model's mean reward, the mean
    KL to the reference (SFT) model, and the responses."""
    idx, starts, ends = answer(model, [prompt(t) for t in tasks], encode, newline)
    said = responses(idx, starts, ends, decode)
    with torch.no_grad(), extras.precision.autocast(c.device, c.dtype):
        r = rewards(reward_model.eval(), idx, ends)
        divergence = kl(log_probs(model.eval(), idx, ends), log_probs(reference.eval(), idx, ends),
                        response_mask(starts, ends, idx.size(1)))
    return dict(success=sum(judge(t, s) for t, s in zip(tasks, said)) / len(tasks), reward=r.mean().item(),
                kl=divergence.mean().item(), said=said)


def checks(reward_model, test, encode, c):
    """Does the reward model check what the judge checks? Over the lines of the train split that meet a held-out
    instruction: how often it scores a line under its own prompt above the same line under a prompt that asks for
    another letter (and the same mark), and above it under one that asks for another mark (and the same letter).
    A tie counts as a miss, so a reward model blind to the letter scores about half or less."""
    g = torch.Generator().manual_seed(c.seed)
    letters = sorted({t[0] for t in test})
    shown = []
    for t, lines in test.items():
        for line in lines:
            letter = [x for x in letters if x != t[0]][torch.randint(len(letters) - 1, (1,), generator=g)]
            mark = [m for m in MARKS if m != t[1]][torch.randint(len(MARKS) - 1, (1,), generator=g)]
            shown += [prompt(u) + line + '\n' for u in (t, letter + t[1], t[0] + mark)]
    idx = torch.zeros(len(shown), max(map(len, shown)), dtype=torch.long)
    for b, s in enumerate(shown):
        idx[b, :len(s)] = torch.tensor(encode(s))
    ends = torch.tensor([len(s) for s in shown])
    with torch.no_grad(), extras.precision.autocast(c.device, c.dtype):
        r = rewards(reward_model.eval(), idx.to(c.device), ends).view(-1, 3)
    return (r[:, 0] > r[:, 1]).float().mean().item(), (r[:, 0] > r[:, 2]).float().mean().item()


def pick(instructions, n, seed):
    """n prompts' instructions drawn with seed from instructions (with replacement: each is as likely)."""
    tasks = list(instructions)
    g = torch.Generator().manual_seed(seed)
    return [tasks[i] for i in torch.randint(len(tasks), (n,), generator=g)]


def table(models, reference, reward_model, test, splits, encode, decode, newline, c):
    """Each model on eval_prompts held-out prompts drawn with seed: the table, and its answers to the first four."""
    tasks = pick(test, c.eval_prompts, c.seed)
    rows = {}
    for name, model in models.items():
        torch.manual_seed(c.seed)
        s = score(model, reference, reward_model, tasks, encode, decode, newline, c)
        with extras.precision.autocast(c.device, c.dtype):
            s['val'] = gpt.estimate_loss(model, {'val': splits['val']}, 50, 16, model.block_size, c.device)['val']
        rows[name] = s
    print(f"\n{c.eval_prompts} held-out prompts (instructions never in a training prompt), one response each, "
          f"seed {c.seed}")
    print("| model | judge's success | reward model's mean reward | KL to SFT | val loss on tiny Shakespeare |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in rows.items():
        print(f"| {name} | {s['success']:.1%} | {s['reward']:+.3f} | {s['kl']:.3f} | {s['val']:.4f} |")
    print("\nsamples (instruction: response; + the judge passes it, - it fails it)")
    for i in range(4):
        t = tasks[i]
        print(f"{t}:")
        for name, s in rows.items():
            print(f"  {name:>4} {'+' if judge(t, s['said'][i]) else '-'} {s['said'][i].rstrip()!r}")
    letter, mark = checks(reward_model, test, encode, c)
    print(f"\nwhat the reward model checks, on the {sum(map(len, test.values()))} lines that meet a held-out "
          f"instruction: it scores a line above the same line under a prompt that asks for another letter "
          f"{letter:.1%} of the time, above it under one that asks for another mark {mark:.1%}")
    return rows


def draw(history, path):
    """RL's curves: the judge's success and the reward model's reward over steps (where they part is reward
    hacking), and the KL to the SFT model."""
    import matplotlib
    matplotlib.use('Agg')  # a file, no window
    import matplotlib.pyplot as plt
    steps, success, reward, divergence = zip(*history)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax.plot(steps, [100 * s for s in success], 'o-', color='tab:blue')
    ax.set_xlabel('RL step')
    ax.set_ylabel("judge's success (%)", color='tab:blue')
    ax.set_title('held-out prompts: the judge and the reward model', fontsize=10)
    ax2 = ax.twinx()
    ax2.plot(steps, reward, 's--', color='tab:orange')
    ax2.set_ylabel("reward model's mean reward", color='tab:orange')
    bx.plot(steps, divergence, 'o-', color='tab:green')
    bx.set_xlabel('RL step')
    bx.set_ylabel('KL to the SFT model (per response)')
    bx.set_title('what RL moved away from the SFT model', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- the pipeline
def load_base(c, chars):
    """The base model from gpt.py's checkpoint, checked: tiny Shakespeare's characters, a context the task fits."""
    model, ckpt = extras.checkpoints.load(c.base, c.device, gpt.GPTLanguageModel)
    if ckpt['chars'] != chars:
        raise extras.errors.UserError(f"{c.base} was trained on other characters than {c.input_file} has: "
                               "train the base on tiny Shakespeare")
    if model.block_size < 32:
        raise extras.errors.UserError(f"{c.base} reads {model.block_size} characters; the task needs at least 32: "
                               "train the base with --block_size=32 or more")
    return model, ckpt


def main(argv=None):
    """SFT, the reward model and RL on top of the base model; the table before and after each."""
    p, c = script_config(__file__, globals(), argv, __doc__,
                             at_least_1=('batch_size', 'rm_prompts', 'eval_prompts', 'eval_interval'))
    for name in ('sft_lr', 'rm_lr', 'rl_lr'):
        if not 0 < getattr(c, name) < float('inf'):
            p.error(f"--{name} must be a number above 0, like 1e-3, not {getattr(c, name)}")
    if not 0 < c.rl_temperature < float('inf'):
        p.error(f"--rl_temperature must be a number above 0, like 2.0, not {c.rl_temperature}")
    for name in ('sft_iters', 'rm_iters', 'rl_iters', 'kl_coef'):
        if not 0 <= getattr(c, name) < float('inf'):
            p.error(f"--{name} must be 0 or more, not {getattr(c, name)}")
    if c.group < 2:
        p.error(f"--group must be 2 or more (pairs and baselines need two samples of a prompt), not {c.group}")
    if c.dtype not in ('auto', 'bfloat16', 'float32'):
        p.error(f"--dtype must be auto, bfloat16 or float32, not {c.dtype!r}")
    fp16 = extras.precision.amp_dtype(c.device, c.dtype) == 'float16'
    c.dtype = 'float32' if fp16 else c.dtype  # no loss scaler here
    if c.eval and not pathlib.Path(c.ckpt_path).is_file():  # before anything is read or written
        raise extras.errors.UserError(f"no pipeline at {c.ckpt_path}: run `python exercises/assistant.py` first")
    if not c.eval and not pathlib.Path(c.base).is_file():
        raise extras.errors.UserError(f"no base model at {c.base}: train one first with `python gpt.py`, or set --base")
    chars, splits = gpt.load_data(c.input_file, 64)
    encode, decode = gpt.tokenizer(chars)
    newline = encode('\n')[0]
    train, test = tasks(pathlib.Path(c.input_file).read_text(encoding='utf-8'))
    print(f"the task: {len(train)} training instructions, {len(test)} held-out ones "
          f"(e.g. {', '.join(list(test)[:5])})")
    torch.manual_seed(c.seed)
    if c.eval:
        return evaluate(c, chars, splits, test, encode, decode, newline)
    base_model, base_ckpt = load_base(c, chars)
    sizes = {k: base_ckpt['config'][k] for k in ('n_embd', 'n_head', 'n_layer', 'block_size')}
    base_model.requires_grad_(False)
    began, times = time.time(), {}

    print("--- stage 1: supervised fine-tuning", flush=True)
    policy = sft(copy.deepcopy(base_model).requires_grad_(True), train, splits['train'], encode, c)
    times['SFT'] = time.time() - began
    sft_model = copy.deepcopy(policy).requires_grad_(False).eval()  # RL's reference, and the table's SFT row

    print("--- stage 2: the reward model", flush=True)
    t = time.time()
    rm_tasks = pick(train, c.rm_prompts, c.seed + 2)
    samples, pairs, rate = preference_pairs(policy, rm_tasks, encode, decode, newline, c)
    test_samples, test_pairs, _ = preference_pairs(policy, pick(test, max(64, c.rm_prompts // 4), c.seed + 3),
                                                   encode, decode, newline, c, borrow=False)  # its own answers
    print(f"{len(pairs)} training pairs from {len(rm_tasks) * c.group} samples (the SFT model passed {rate:.1%}); "
          f"{len(test_pairs)} held-out pairs")
    if len(pairs) == 0 or len(test_pairs) == 0:
        raise extras.errors.UserError("the SFT model's samples gave no pairs that the judge ranks (all passed or all "
                               "failed): train it longer (--sft_iters) or sample more (--rm_prompts)")
    reward_model = train_reward_model(reward_model_from(copy.deepcopy(policy)), samples, pairs, c)
    reward_model.requires_grad_(False)
    rm_accuracy = pair_accuracy(reward_model, test_samples, test_pairs)
    print(f"reward model: {rm_accuracy:.1%} of held-out pairs ranked as the judge ranks them "
          f"({pair_accuracy(reward_model, samples, pairs):.1%} of its training pairs)")
    times['reward model'] = time.time() - t

    print("--- stage 3: reinforcement learning against the reward model", flush=True)
    t = time.time()
    history = rl(policy, sft_model, reward_model, train, pick(test, max(1, c.eval_prompts // 4), c.seed + 4),
                 encode, decode, newline, c)
    times['RL'] = time.time() - t
    extras.files.save_atomic(c.ckpt_path, lambda f: torch.save(dict(
        chars=chars, config=sizes, settings=vars(c), history=history, rm_accuracy=rm_accuracy,
        base=base_model.state_dict(), sft=sft_model.state_dict(), reward=reward_model.state_dict(),
        rl=policy.state_dict()), f))
    print(f"saved the three stages' models to {c.ckpt_path}")
    print("seconds: " + ', '.join(f"{k} {v:.0f}" for k, v in times.items()) + f"; in all {time.time() - began:.0f}")
    rows = table({'base': base_model, 'SFT': sft_model, 'RL': policy}, sft_model, reward_model, test, splits,
                 encode, decode, newline, c)
    if c.plot:
        draw(history, c.plot)
    return dict(rows=rows, history=history, rm_accuracy=rm_accuracy, times=times)


def evaluate(c, chars, splits, test, encode, decode, newline):
    """--eval: the saved pipeline's models on held-out prompts drawn with --seed."""
    try:
        saved = torch.load(c.ckpt_path, map_location=c.device, weights_only=True)
        build = lambda: gpt.GPTLanguageModel(len(chars), dropout=0.0, **saved['config']).to(c.device)  # noqa: E731
        models = {}
        for name in ('base', 'sft', 'rl'):
            models[name] = build()
            models[name].load_state_dict(saved[name])
        reward_model = reward_model_from(build())
        reward_model.load_state_dict(saved['reward'])
        if saved['chars'] != chars:
            raise ValueError('other characters')
    except Exception as e:
        raise extras.errors.UserError(f"{c.ckpt_path} holds no pipeline of this script ({type(e).__name__}): "
                               "run `python exercises/assistant.py` again") from None
    return dict(rows=table({'base': models['base'], 'SFT': models['sft'], 'RL': models['rl']}, models['sft'],
                           reward_model, test, splits, encode, decode, newline, c))


if __name__ == '__main__':
    extras.errors.run(main)
