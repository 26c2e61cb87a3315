"""Stacked training: K models of one shape held as one set of tensors with a leading member dimension and stepped
together, each member's numbers exactly those of its solo run. (A run alone is the training loop's population of
one, on makemore.solo's engine, which answers the loop as these do.)

The engines compute the members' gradients, each equal to its solo run's bit for bit:
- `StackedMLP` and `StackedTable`: the MLP's and the logits tables' forward and backward written out with batched
  products, running per member the very kernels autograd runs for one model (addmm -> baddbmm, mm -> bmm, the
  same softmax, tanh, gather and embedding backwards), so a K-member step costs a few batched kernels, not K;
- `VmappedModel`: any other model, through torch.func (stack_module_state, functional_call, vmap) and autograd,
  once `why_not_stacked` has seen its stacked gradients equal its solo ones on the members' first batches.
makemore.optimizers.stacked then steps every member with its optimizer family's update, the one its solo run takes,
on that member's own tensors, so the parameters stay equal to a solo run's after every step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import types
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from makemore.models import DISTINCT_ROWS, MLP, Additive, NgramTable, context_index, distinct_rows, eval_rows, predict

ROWS_PER_EVAL_CHUNK = 2**16  # rows of a stacked evaluation chunk, over every member: bounds its activations


class Predictor(nn.Module):
    """A model's logits for a batch of windows [B, T] ([B, V]) or of whole items [B, L] ([B, L, V])."""

    def __init__(self, model: nn.Module, items: bool):
        super().__init__()
        self.model, self.items = model, items

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_items(x) if self.items else self.model(x)


def member_losses(
    logits: torch.Tensor, targets: torch.Tensor, smoothing: list[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's training loss on its batch, as its solo run computes it (one cross-entropy on its logits), and
    their sum, whose backward gives each member's logits the gradient its own loss gives them."""
    losses = [
        F.cross_entropy(lk.flatten(0, -2), yk.flatten(), ignore_index=-1, label_smoothing=s)
        for lk, yk, s in zip(logits.unbind(0), targets.unbind(0), smoothing)
    ]
    stacked = torch.stack(losses)
    return stacked.detach(), stacked.sum()


class StackedEngine:
    """The stacked parameters [K, *shape] by name (each member's slice in its solo layout), their gradients after
    `step`, and the members' logits on shared rows for evaluation. What the training loop (makemore.loop) asks of
    every engine, a run alone's (makemore.solo) included."""

    names: list[str]
    params: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    member_dim = True  # a step's batches carry the member dimension first: x [K, B, T]

    @property
    def size(self) -> int:
        return len(next(iter(self.params.values())))

    def like(self, models: list[nn.Module]) -> StackedEngine:
        """An engine of this kind holding other models of this shape (the members' weight averages)."""
        raise NotImplementedError

    def split_losses(self, evaluation: Evaluation, split: str) -> list[float]:
        """Every member's loss on a whole split, as makemore.models.loss_on computes one model's."""
        return evaluation.losses(self, split)

    def member_weights(self, k: int) -> list[torch.Tensor]:
        """Member k's floating-point weights, as views that training updates in place."""
        return [self.params[name].detach()[k] for name in self.names]

    def member_grads(self, k: int) -> list[torch.Tensor]:
        """Member k's gradients after `step`, as views the optimizer reads."""
        return [self.grads[name][k] for name in self.names]

    def generator_state(self, initial: torch.Tensor) -> torch.Tensor:
        """The global generator's state a member's checkpoint keeps: the one it started from (`initial`), which a
        stacked step never draws from."""
        return initial

    def step(self, x: torch.Tensor, y: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
        """Fill `grads` for one batch per member (x [K, B, T]: windows or whole items; y [K, B] or [K, B, L]), or
        for one batch every member trains on (x [B, T], a full-batch step); return each member's loss [K]."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits [K, n, ...] on the same rows x [n, ...], in eval mode."""
        raise NotImplementedError

    def keep(self, members: list[int]) -> None:
        """Drop every member but these (in this order): a member that ended costs nothing more."""
        raise NotImplementedError

    def weights(self, k: int, template: nn.Module) -> dict[str, torch.Tensor]:
        """Member k's state_dict, as its own model would give it: its parameters copied into `template`."""
        with torch.no_grad():
            for name, p in template.named_parameters():
                p.copy_(self.params[name][k])
        return template.state_dict()


class Handwritten(StackedEngine):
    """An engine that writes out one model family's forward and backward, batched over the members: each member's
    parameters stacked, each member's rows of a lookup table offset past the members before it (`offsets`), and
    the loss's gradient as autograd computes it."""

    def __init__(self, models: list[nn.Module], table: str):
        self.names = [name for name, _ in models[0].named_parameters()]
        self.params = {
            name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).contiguous()
            for name in self.names
        }
        self.grads = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.lookup = table  # the parameter whose rows the contexts look up
        self.offsets = self.first_rows()

    def like(self, models: list[nn.Module]) -> StackedEngine:
        return type(self)(models)

    @property
    def rows_per_member(self) -> int:
        return self.params[self.lookup][0].numel() // self.params[self.lookup].shape[-1]

    def first_rows(self) -> torch.Tensor:
        """Each member's first row in the members' lookup tables laid end to end."""
        device = self.params[self.lookup].device
        return (torch.arange(self.size, device=device) * self.rows_per_member).view(-1, 1, 1)

    def logits_gradient(
        self, logits: torch.Tensor, y: torch.Tensor, smoothing: list[float]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """d loss / d logits per member, and the losses. Without label smoothing: nll_loss's backward (-1/B at each
        target) through log_softmax's, as autograd runs them; with it, autograd on each member's own loss."""
        if any(smoothing):
            leaf = logits.detach().requires_grad_()
            losses, total = member_losses(leaf, y, smoothing)
            total.backward()
            return leaf.grad, losses
        logp = torch.log_softmax(logits, 2)
        losses = torch.stack([F.nll_loss(lp, t) for lp, t in zip(logp.unbind(0), y.unbind(0))])  # its own summing order
        seed = torch.zeros_like(logp).scatter_(2, y.unsqueeze(2), nll_weight(y.shape[1]))
        return torch._log_softmax_backward_data(seed, logp, 2, logits.dtype), losses

    def forward(self, x: torch.Tensor) -> tuple:
        """x [K, n, T]: each member's contexts; the logits [K, n, V] last, what the backward needs before."""
        raise NotImplementedError

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x.expand(self.size, *x.shape))[-1]

    def step(self, x: torch.Tensor, y: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
        if x.dim() == 2:  # a full-batch step: every member on the whole split (windows: x [K, B, T] per member)
            x, y = x.expand(self.size, *x.shape), y.expand(self.size, *y.shape)
        *saved, logits = self.forward(x)
        d, losses = self.logits_gradient(logits, y, smoothing)
        self.backward(d, *saved)
        return losses

    def backward(self, d: torch.Tensor, *saved: torch.Tensor) -> None:
        """Every gradient into `grads`, from d loss / d logits."""
        raise NotImplementedError

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members, device=self.params[self.lookup].device)
        self.params = {name: p.index_select(0, index) for name, p in self.params.items()}
        self.grads = {name: torch.zeros_like(p) for name, p in self.params.items()}
        self.offsets = self.first_rows()


class StackedMLP(Handwritten):
    """makemore.models.MLP without norm or dropout: per member the kernels autograd runs for one MLP (nn.Linear's
    addmm as baddbmm, its backward's mm as bmm, the same tanh and embedding backwards)."""

    def __init__(self, models: list[MLP]):
        super().__init__(models, "embedding.weight")
        self.hidden = [
            n.removesuffix(".weight") for n in self.names if n.startswith("hidden.") and n.endswith("weight")
        ]
        self.direct = models[0].direct is not None
        self.emb = models[0].embedding.weight.shape[1]
        self.bind()

    def bind(self) -> None:
        """The views a step takes of the stacked tensors, made once (a view costs a microsecond or two a step)."""
        p, g = self.params, self.grads

        def linear(name: str) -> tuple:
            weight, bias = p[f"{name}.weight"], p.get(f"{name}.bias")
            biases = (bias.unsqueeze(1), g[f"{name}.bias"]) if bias is not None else (None, None)
            return weight, weight.transpose(1, 2), g[f"{name}.weight"], *biases

        self.linears = [linear(name) for name in self.hidden]  # (W, W^T, dW, b as [K, 1, out], db)
        self.out = linear("output")
        self.skip = linear("direct") if self.direct else None
        self.table = p["embedding.weight"].view(-1, self.emb)
        self.table_grad = g["embedding.weight"].view(-1, self.emb)

    def forward(self, x: torch.Tensor) -> tuple:
        """The rows of every member's embedding table, its concatenated embeddings, each tanh layer's output and
        the logits."""
        rows = (x + self.offsets).view(-1)
        h0 = torch.index_select(self.table, 0, rows).view(self.size, x.shape[1], -1)  # nn.Embedding, flatten(1)
        activations, h = [], h0
        for _, weight_t, _, bias, _ in self.linears:  # nn.Linear is addmm(bias, x, W.t()); batched, baddbmm
            h = torch.tanh(torch.baddbmm(bias, h, weight_t))
            activations.append(h)
        _, weight_t, _, bias, _ = self.out
        logits = torch.baddbmm(bias, h, weight_t)
        if self.skip:  # logits + direct(x), a Linear without bias
            logits = logits + torch.bmm(h0, self.skip[1])
        return rows, h0, activations, logits

    def backward(self, d: torch.Tensor, rows: torch.Tensor, h0: torch.Tensor, activations: list) -> None:
        weight, _, weight_grad, _, bias_grad = self.out
        torch.bmm(d.transpose(1, 2), activations[-1], out=weight_grad)  # autograd: mm(grad.t(), input)
        torch.sum(d, 1, out=bias_grad)
        dh = torch.bmm(d, weight)
        if self.skip:
            torch.bmm(d.transpose(1, 2), h0, out=self.skip[2])
            dh0 = torch.bmm(d, self.skip[0])
        for i in range(len(self.linears) - 1, -1, -1):
            weight, _, weight_grad, _, bias_grad = self.linears[i]
            dpre = torch.ops.aten.tanh_backward(dh, activations[i])
            torch.bmm(dpre.transpose(1, 2), activations[i - 1] if i else h0, out=weight_grad)
            torch.sum(dpre, 1, out=bias_grad)
            dh = torch.bmm(dpre, weight)
        if self.skip:
            dh = dh + dh0  # the two paths into the embeddings, summed as autograd sums them
        accumulate_rows(self.table_grad.zero_(), rows, dh.reshape(-1, self.emb))

    def keep(self, members: list[int]) -> None:
        super().keep(members)
        self.bind()


class StackedTable(Handwritten):
    """makemore's logits tables: NgramTable (W's row for the whole context) and Additive (the sum of W's rows,
    one per context position): per member autograd's gather forward and its accumulating index_put_ backward."""

    def __init__(self, models: list[NgramTable | Additive]):
        super().__init__(models, "W")
        self.vocab_size = self.params["W"].shape[-1]
        self.additive = isinstance(models[0], Additive)
        self.block_size = models[0].offsets.numel() if self.additive else models[0].block_size

    def forward(self, x: torch.Tensor) -> tuple:
        K, n = self.size, x.shape[1]
        W = self.params["W"].view(-1, self.vocab_size)
        if self.additive:  # W[context + offsets].sum(1): row t * V + c for the character c at position t
            positions = torch.arange(self.block_size, device=x.device) * self.vocab_size
            rows = x + positions + self.offsets
            return rows, W[rows].sum(2)
        rows = context_index(x.reshape(K * n, -1), self.vocab_size).view(K, n) + self.offsets.view(K, 1)
        return rows, W[rows]

    def backward(self, d: torch.Tensor, rows: torch.Tensor) -> None:
        if self.additive:  # sum's backward expands the gradient over the positions
            d = d.unsqueeze(2).expand(*rows.shape, self.vocab_size)
        grad = self.grads["W"].view(-1, self.vocab_size).zero_()
        accumulate_rows(grad, rows.flatten(), d.reshape(-1, self.vocab_size))


def accumulate_rows(table: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """table[rows[i]] += values[i], in the order of i, as one model's embedding and index backwards add them: on
    one thread (on more, index_put_ splits the rows among threads, and a row's sum no longer follows i)."""
    with torch_threads(1):
        table.index_put_((rows,), values, accumulate=True)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on `count` threads for the code inside, the caller's number of threads after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=8)
def nll_weight(batch: int) -> float:
    """nll_loss's gradient at each target of a batch's mean loss, -1 / batch as float32 divides it."""
    return (-(1 / torch.tensor(batch, dtype=torch.float32))).item()


class MemberLayerNorm(torch.autograd.Function):
    """nn.LayerNorm as one model computes it, forward and backward (native_layer_norm and its backward), run member
    by member under vmap: vmap's own rule for it sums the gain's and shift's gradients over the batch in another
    order than the native backward does, and a member's numbers would drift from its solo run's."""

    @staticmethod
    def forward(x, weight, bias, shape, eps):
        return torch.native_layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, shape, _ = inputs
        _, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.shape = shape
        ctx.mark_non_differentiable(mean, rstd)

    @staticmethod
    def backward(ctx, grad, *_):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        mask = [True, weight.requires_grad, bias.requires_grad]
        dx, dw, db = torch.ops.aten.native_layer_norm_backward(grad, x, ctx.shape, mean, rstd, weight, bias, mask)
        return dx, dw, db, None, None

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, shape, eps):
        def member(t: torch.Tensor, dim: int | None, k: int) -> torch.Tensor:
            return t if dim is None else t.select(dim, k)

        outputs = [
            MemberLayerNorm.apply(*(member(t, d, k) for t, d in zip((x, weight, bias), in_dims)), shape, eps)
            for k in range(info.batch_size)
        ]
        return tuple(torch.stack(parts) for parts in zip(*outputs)), (0, 0, 0)


def member_layer_norm(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """nn.LayerNorm.forward through MemberLayerNorm."""
    return MemberLayerNorm.apply(x, self.weight, self.bias, tuple(self.normalized_shape), self.eps)[0]


class VmappedModel(StackedEngine):
    """Any model: its members' parameters stacked (torch.func.stack_module_state), one forward vmapped over them
    (functional_call on a copy without storage), and autograd through each member's own loss."""

    def __init__(self, models: list[nn.Module], items: bool):
        from torch.func import functional_call, stack_module_state, vmap

        self.items = items
        predictors = [Predictor(m, items) for m in models]
        params, self.buffers = stack_module_state(predictors)
        self.names = [name.removeprefix("model.") for name in params]
        self.params = {name.removeprefix("model."): p for name, p in params.items()}
        for p in self.params.values():
            p.grad = torch.zeros_like(p)  # kept, and zeroed each step: a member's slices stay the same tensors
        base = copy.deepcopy(predictors[0]).to("meta")
        for module in base.modules():
            if type(module) is nn.LayerNorm and module.elementwise_affine:  # vmap's rule sums their gradients otherwise
                module.forward = types.MethodType(member_layer_norm, module)

        def call(params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():  # vmap runs an op it has no rule for member by member, as wanted here
                warnings.filterwarnings("ignore", "There is a performance drop", UserWarning)
                return functional_call(base, ({f"model.{k}": v for k, v in params.items()}, buffers), (x,))

        self.base = base
        self.each = vmap(call, in_dims=(0, 0, 0))  # a batch per member
        self.shared = vmap(call, in_dims=(0, 0, None))  # the same rows for every member

    @property
    def grads(self) -> dict[str, torch.Tensor]:
        return {name: p.grad for name, p in self.params.items()}

    def like(self, models: list[nn.Module]) -> StackedEngine:
        return VmappedModel(models, self.items)

    def member_weights(self, k: int) -> list[torch.Tensor]:
        buffers = [b[k] for b in self.buffers.values() if b.is_floating_point()]
        return super().member_weights(k) + buffers

    def step(self, x: torch.Tensor, y: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
        for p in self.params.values():
            p.grad.zero_()
        self.base.train()
        if x.dim() == 3:
            logits = self.each(self.params, self.buffers, x)
        else:  # a full-batch step: every member on the whole split
            logits, y = self.shared(self.params, self.buffers, x), y.expand(self.size, *y.shape)
        losses, total = member_losses(logits, y, smoothing)
        total.backward()
        return losses

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.base.eval()
        with torch.no_grad():
            return self.shared(self.params, self.buffers, x)

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members, device=next(iter(self.params.values())).device)
        kept = {}
        for name, p in self.params.items():
            kept[name] = p.detach().index_select(0, index).requires_grad_()
            kept[name].grad = torch.zeros_like(kept[name])
        self.params = kept
        self.buffers = {name: b.index_select(0, index) for name, b in self.buffers.items()}


class Evaluation:
    """Every member's loss over a whole split, exactly as makemore.models.loss_on computes one model's: the same
    chunks, each chunk's loss summed by the same kernel and accumulated in double, on the same logits. A split of
    windows holds few distinct contexts (the names' dev split: 2,965 of 22,655), so each distinct context's logits
    are computed once and gathered: a row's logits do not depend on the rows beside it (past MKL's few-row kernels,
    which sum in another order: hence DISTINCT_ROWS)."""

    def __init__(self, X: dict, Y: dict, vocab_size: int):
        self.X, self.Y, self.vocab_size = X, Y, vocab_size
        self.distinct: dict[str, tuple] = {}  # by split, found at its first stacked evaluation

    def rows_of(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A split's distinct rows and each example's among them; (the rows, None) where it does not pay: whole
        items are rarely repeated, and few rows take MKL's other kernels."""
        if split not in self.distinct:
            X, found = self.X[split], None
            if self.Y[split].dim() == 1:
                rows, inverse = distinct_rows(X, self.vocab_size)
                found = (rows, inverse) if len(rows) >= DISTINCT_ROWS else None
            self.distinct[split] = found or (X, None)
        return self.distinct[split]

    def losses(self, engine: StackedEngine, split: str) -> list[float]:
        X, Y, K = self.X[split], self.Y[split], engine.size
        rows, inverse = self.rows_of(split)
        logits = self.logits(engine, rows) if inverse is not None else None
        totals = [torch.zeros((), dtype=torch.float64, device=X.device) for _ in range(K)]
        chunk = max(1, eval_rows(self.vocab_size) // (Y.shape[1] if Y.dim() == 2 else 1))
        for start in range(0, len(X), chunk):
            y = Y[start : start + chunk]
            if inverse is None:
                part = self.logits(engine, X[start : start + chunk])
            else:
                part = logits.index_select(1, inverse[start : start + chunk])
            targets = y.flatten()
            for k in range(K):
                totals[k] += F.cross_entropy(part[k].flatten(0, -2), targets, ignore_index=-1, reduction="sum").double()
        count = (Y >= 0).sum()
        return [(total / count).item() for total in totals]

    def logits(self, engine: StackedEngine, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on rows x, a bounded number of rows at a time."""
        step = max(DISTINCT_ROWS, ROWS_PER_EVAL_CHUNK // engine.size)
        return torch.cat([engine.logits(x[i : i + step]) for i in range(0, len(x), step)], 1)


def engine_for(models: list[nn.Module], items: bool) -> StackedEngine:
    """The engine for these members: a hand-written one where it covers the model, else vmap and autograd."""
    engine = handwritten(models[0])
    return engine(models) if engine else VmappedModel(models, items)


def handwritten(model: nn.Module) -> type[Handwritten] | None:
    """The hand-written engine of a model: StackedMLP for makemore's MLP with tanh layers only (no norm, no dropout)
    trained through autograd, StackedTable for its logits tables."""
    if type(model) in (NgramTable, Additive):
        return StackedTable
    if type(model) is MLP and not getattr(model, "manual_backward", False):
        return StackedMLP if all(isinstance(m, nn.Linear | nn.Tanh) for m in model.hidden) else None
    return None


def why_not_stacked(
    models: list[nn.Module], batches: list[tuple[torch.Tensor, torch.Tensor]], items: bool
) -> str | None:
    """Why these members cannot train stacked with each one's numbers equal to its solo run's, or None when they
    can: no optimizer steps, BatchNorm's running statistics, random numbers in the forward (dropout), or a stacked
    forward pass or gradients that differ from the solo ones on each member's first batch (`batches`: (x, y) per
    member)."""
    model = models[0]
    if getattr(model, "trained_by_counting", False):
        return "a counting model takes no optimizer steps"
    if getattr(model, "manual_backward", False):
        return (
            "model.backward=manual fuses one model's SGD updates into its products; a population computes the "
            "MLP's gradients by hand itself, with model.backward=autograd"
        )
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "BatchNorm keeps running statistics that each forward pass updates in place"
    if handwritten(model):
        return None
    try:
        engine = VmappedModel(copies(models), items)
        inputs = torch.stack([b[0] for b in batches])
        engine.step(inputs, torch.stack([b[1] for b in batches]), [0.0] * len(models))
    except RuntimeError as e:
        if "random" in str(e).lower():
            return "its forward draws random numbers (dropout), which stacked members would draw from one generator"
        return f"its forward cannot be vmapped ({str(e).splitlines()[0][:120]})"
    for k, (member, (x, y)) in enumerate(zip(copies(models), batches)):
        logits, targets = predict(member, x, y)
        F.cross_entropy(logits, targets, ignore_index=-1).backward()
        differing = [name for name, p in member.named_parameters() if not torch.equal(p.grad, engine.grads[name][k])]
        if not differing:
            continue
        with torch.no_grad():  # the forward again, to tell a forward that rounds otherwise from a backward that does
            stacked_logits = engine.each(engine.params, engine.buffers, inputs)
        if not torch.equal(logits.detach(), stacked_logits[k].flatten(0, -2)):  # so all its gradients differ
            return (
                "its stacked forward pass differs from its solo one in the last digits (this CPU's matrix products "
                "round otherwise when stacked), and so do its gradients"
            )
        return f"its stacked gradients differ from its solo ones in the last digits (first at {differing[0]})"
    return None


def copies(models: list[nn.Module]) -> list[nn.Module]:
    return [copy.deepcopy(m) for m in models]
