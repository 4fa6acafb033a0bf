"""Muon (Keller Jordan, 2024): each weight matrix's update orthogonalised by a few Newton-Schulz steps, AdamW for the
rest. EX4's literature exercise and its speedrun both train with it."""
import torch


def orthogonalize(G, steps=5):
    """About the nearest semi-orthogonal matrix to each matrix in G (..., m, n): singular values pushed towards 1
    by a Newton-Schulz iteration, as Muon does."""
    a, b, c = 3.4445, -4.7750, 2.0315  # the quintic's coefficients from Muon's reference implementation
    X = G / (G.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    tall = X.size(-2) > X.size(-1)
    X = X.mT if tall else X
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


class Muon(torch.optim.Optimizer):
    """Muon for the blocks' 2-D weights, AdamW (PyTorch's defaults, as gpt.py's) for every other parameter.

    gpt.train sets each group's 'lr' from its schedule; the Muon group scales it by muon_lr / learning_rate.
    weight_decay is AdamW's; matrix_decay shrinks the Muon group's matrices by lr * matrix_decay a step;
    ns_dtype (torch.bfloat16, as in Muon's reference) runs the Newton-Schulz steps in that precision."""
    def __init__(self, model, lr, muon_lr, momentum=0.95, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 ns_steps=5, matrix_decay=0.0, ns_dtype=None):
        matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
        others = [p for p in model.parameters() if all(p is not m for m in matrices)]
        groups = [dict(params=matrices, muon=True, scale=muon_lr / lr, weight_decay=matrix_decay),
                  dict(params=others, muon=False, scale=1.0)]
        super().__init__(groups, dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay))
        self.ns_steps = ns_steps  # Newton-Schulz iterations per update
        self.ns_dtype = ns_dtype  # their precision: None the gradients' own; torch.bfloat16 is faster where native

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, (beta1, beta2), mu = group['lr'] * group['scale'], group['betas'], group['momentum']
            params = [p for p in group['params'] if p.grad is not None]
            if group['muon']:  # Nesterov momentum, then orthogonalised: matrices of one shape in one batch
                for shape in {p.shape for p in params}:
                    same = [p for p in params if p.shape == shape]
                    bufs = [self.state[p].setdefault('momentum', torch.zeros_like(p)) for p in same]
                    torch._foreach_mul_(bufs, mu)
                    torch._foreach_add_(bufs, [p.grad for p in same])
                    nesterov = torch.stack([p.grad + mu * buf for p, buf in zip(same, bufs)])
                    update = orthogonalize(nesterov.to(self.ns_dtype or nesterov.dtype), self.ns_steps)
                    update = update.to(nesterov.dtype)
                    torch._foreach_mul_(same, 1 - lr * group['weight_decay'])  # matrix_decay (0: none)
                    torch._foreach_add_(same, list(update.unbind(0)), alpha=-lr * max(1.0, shape[0] / shape[1]) ** 0.5)
                continue
            for p in params:
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state['step'] += 1
                state['m'].lerp_(p.grad, 1 - beta1)
                state['v'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = state['m'] / (1 - beta1 ** state['step'])
                v_hat = state['v'] / (1 - beta2 ** state['step'])
                p.mul_(1 - lr * group['weight_decay']).addcdiv_(m_hat, v_hat.sqrt().add_(group['eps']), value=-lr)
