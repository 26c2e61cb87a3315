"""Lecture 4 ("becoming a backprop ninja") as a feature: the MLP's backward pass derived by hand.

`ManualBackward` runs the MLP's training-mode forward pass and its backward pass without autograd: no graph
is built, every activation and gradient lives in a buffer allocated once, and for plain SGD each gradient
product is fused into its parameter's update (`W.addmm_(dh.T, x, alpha=-lr / B)`). For any other optimizer
the gradients are written into `p.grad` and the optimizer steps as usual. It covers the lectures' MLPs: any
number of tanh layers, `norm: none | batch`, the direct connections and every init; dropout and LayerNorm
are refused by the schema (makemore/schema.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import MLP


class ManualBackward:
    """Forward and hand-derived backward passes of one MLP, for batches of one fixed size."""

    def __init__(self, model: MLP, batch_size: int, label_smoothing: float = 0.0):
        self.model, self.smoothing, B = model, label_smoothing, batch_size
        self.linears = [m for m in model.hidden if isinstance(m, nn.Linear)]
        self.norms = [m for m in model.hidden if isinstance(m, nn.BatchNorm1d)] or [None] * len(self.linears)
        self.emb = model.embedding.weight.shape[1]
        like = {"device": model.output.weight.device, "dtype": model.output.weight.dtype}
        new = lambda *shape: torch.zeros(*shape, **like)  # noqa: E731
        self.x0 = new(B, self.linears[0].in_features)  # the concatenated embeddings
        self.pre = [new(B, m.out_features) for m in self.linears]  # tanh's input (after the norm)
        self.act = [new(B, m.out_features) for m in self.linears]  # tanh's output
        self.dact = [new(B, m.out_features) for m in self.linears]  # d loss / d act, then d loss / d pre
        self.work = [new(B, m.out_features) for m in self.linears]
        self.xhat = [new(B, m.out_features) if n is not None else None for m, n in zip(self.linears, self.norms)]
        self.rstd = [new(m.out_features) if n is not None else None for m, n in zip(self.linears, self.norms)]
        self.dx0 = new(B, self.linears[0].in_features)
        self.logits, self.probs = new(B, model.output.out_features), new(B, model.output.out_features)
        self.ones = torch.ones(B, **like)  # a bias gradient is dh.T @ ones: one matrix-vector product
        self.minus = torch.full((B, 1), -(1.0 - label_smoothing), **like)
        self.uniform = label_smoothing / model.output.out_features
        self.alpha: float | None = None  # -lr / B while a fused SGD step runs; None: gradients go into p.grad

    @torch.no_grad()
    def sgd_backward(self, context: torch.Tensor, lr: float) -> None:
        """After `forward` on this context: the backward pass with one step of plain SGD fused into each gradient
        product, so no gradient is ever written."""
        self.alpha = -lr / len(context)
        self._backward(context)

    @torch.no_grad()
    def gradients(self, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Forward and backward, leaving d loss / d p in every p.grad for an optimizer. Returns the batch's loss."""
        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        loss = self.forward(context, targets)
        self.alpha = None
        self.probs.div_(len(targets))  # the mean over the batch, once, instead of in every product
        self._backward(context)
        return loss

    @torch.no_grad()
    def forward(self, context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training-mode forward pass into the buffers; leaves d loss / d logits (times B) in self.probs.
        Returns the batch's loss."""
        model, x = self.model, self.x0
        torch.index_select(model.embedding.weight, 0, context.view(-1), out=x.view(-1, self.emb))
        for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
            if linear.bias is not None:
                torch.addmm(linear.bias, x, linear.weight.t(), out=self.pre[i])
            else:
                torch.mm(x, linear.weight.t(), out=self.pre[i])
            if norm is not None:
                self._batch_norm(i, norm)
            x = torch.tanh(self.pre[i], out=self.act[i])
        torch.addmm(model.output.bias, x, model.output.weight.t(), out=self.logits)
        if model.direct is not None:
            self.logits.addmm_(self.x0, model.direct.weight.t())
        loss = F.cross_entropy(self.logits, targets, label_smoothing=self.smoothing)
        # d loss / d logits = softmax - target distribution ((1 - s) one-hot + s / V), times the batch size
        torch.softmax(self.logits, 1, out=self.probs).scatter_add_(1, targets.view(-1, 1), self.minus)
        if self.uniform:
            self.probs.sub_(self.uniform)
        return loss

    def _batch_norm(self, i: int, norm: nn.BatchNorm1d) -> None:
        """BatchNorm1d in training mode, in place on pre[i]; keeps x-hat and 1/std and moves the running averages."""
        pre, n = self.pre[i], self.pre[i].shape[0]
        mean = pre.mean(0)
        centred = pre.sub_(mean)
        var = torch.mul(centred, centred, out=self.work[i]).mean(0)  # biased: what normalises the batch
        torch.rsqrt(var + norm.eps, out=self.rstd[i])
        torch.mul(centred, self.rstd[i], out=self.xhat[i])
        torch.addcmul(norm.bias, self.xhat[i], norm.weight, out=pre)
        norm.running_mean.mul_(1 - norm.momentum).add_(mean, alpha=norm.momentum)
        norm.running_var.mul_(1 - norm.momentum).add_(var, alpha=norm.momentum * n / (n - 1))  # unbiased, as torch
        norm.num_batches_tracked.add_(1)

    def _backward(self, context: torch.Tensor) -> None:
        """Every gradient, from the logits down to the embedding; each layer's input gradient before its update."""
        model, d = self.model, self.probs
        last = len(self.linears) - 1
        torch.mm(d, model.output.weight, out=self.dact[last])
        if model.direct is not None:
            torch.mm(d, model.direct.weight, out=self.dx0)
            self._matrix(model.direct.weight, d.t(), self.x0)
        self._matrix(model.output.weight, d.t(), self.act[last])
        self._vector(model.output.bias, d)
        for i in range(last, -1, -1):
            dpre = self.dact[i]  # tanh: d pre = d act * (1 - act^2), in place
            dpre.sub_(torch.mul(dpre, self.act[i], out=self.work[i]).mul_(self.act[i]))
            if self.norms[i] is not None:
                dpre = self._batch_norm_backward(i, self.norms[i])
            linear = self.linears[i]
            if i > 0:
                torch.mm(dpre, linear.weight, out=self.dact[i - 1])
            elif model.direct is not None:
                self.dx0.addmm_(dpre, linear.weight)
            else:
                torch.mm(dpre, linear.weight, out=self.dx0)
            self._matrix(linear.weight, dpre.t(), self.act[i - 1] if i > 0 else self.x0)
            if linear.bias is not None:
                self._vector(linear.bias, dpre)
        rows = self.dx0.view(-1, self.emb)
        weight = model.embedding.weight
        if self.alpha is None:
            weight.grad.zero_().index_add_(0, context.view(-1), rows)
        else:
            weight.index_add_(0, context.view(-1), rows, alpha=self.alpha)

    def _batch_norm_backward(self, i: int, norm: nn.BatchNorm1d) -> torch.Tensor:
        """From d y to d (the linear layer's output), and the gain's and shift's gradients."""
        dy, xhat = self.dact[i], self.xhat[i]
        dxhat = torch.mul(dy, norm.weight, out=self.work[i])  # before the gain moves
        self._vector(norm.weight, torch.mul(dy, xhat, out=self.pre[i]))
        self._vector(norm.bias, dy)
        # d pre = (d xhat - mean(d xhat) - xhat * mean(d xhat * xhat)) / std
        projection = torch.mul(dxhat, xhat, out=dy).mean(0)
        return dxhat.sub_(dxhat.mean(0)).sub_(xhat.mul(projection)).mul_(self.rstd[i])

    def _matrix(self, weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
        """weight's gradient is a @ b: into weight.grad, or straight into an SGD update."""
        if self.alpha is None:
            torch.mm(a, b, out=weight.grad)
        else:
            weight.addmm_(a, b, alpha=self.alpha)

    def _vector(self, bias: torch.Tensor, rows: torch.Tensor) -> None:
        """bias's gradient is the sum of rows' rows: into bias.grad, or straight into an SGD update."""
        if self.alpha is None:
            torch.mv(rows.t(), self.ones, out=bias.grad)
        else:
            bias.addmv_(rows.t(), self.ones, alpha=self.alpha)
