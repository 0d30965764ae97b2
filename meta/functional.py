"""Shared inner-loop machinery for gradient-based meta-learning, built on :mod:`torch.func`.

A model's parameters are handled as plain ``{name: tensor}`` dictionaries and evaluated with
:func:`torch.func.functional_call`, so adapting to a task never copies or mutates the module
(the functional form of MAML, Finn et al. 2017).  Inner-loop gradients come from
:func:`torch.func.grad`; called on tensors that take part in an outer autograd graph, its
result stays differentiable, which gives second-order meta-gradients.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from mtl.backbones.base import Backbone
from mtl.errors import ConfigError

ParamDict = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "ParamDict",
    "LossFn",
    "AdaptedPredictor",
    "check_positive_float",
    "check_positive_int",
    "check_report_steps",
    "check_task_batch",
    "classification_accuracy",
    "query_metrics",
    "step_metrics",
    "detach_params",
    "functional_forward",
    "ForwardPlan",
    "forward_plan",
    "has_running_stats",
    "require_head",
    "inner_loop",
    "resolve_loss",
    "select_params",
    "training_mode",
]


# --------------------------------------------------------------------------- validation


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float, raising :class:`ConfigError` unless it is finite and > 0.

    Used for the inner learning rate of MAML (Finn et al. 2017) and its relatives.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` unchanged, raising :class:`ConfigError` unless it is an ``int`` >= 1.

    Used for the number of inner steps of MAML (Finn et al. 2017) and Reptile (Nichol et al. 2018).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_report_steps(at_steps: Iterable[int] | None, steps: int) -> list[int]:
    """``at_steps`` sorted and without repeats, raising :class:`ConfigError` unless each is in ``1..steps``.

    The inner-step counts at which ``evaluate_task`` of MAML (Finn et al. 2017) and Reptile
    (Nichol et al. 2018) also reports query metrics, e.g. to choose the number of test steps on
    validation tasks from one adaptation run. ``None`` gives ``[]``.
    """
    if at_steps is None:
        return []
    if isinstance(at_steps, (str, bytes)) or not isinstance(at_steps, Iterable):
        raise ConfigError(f"at_steps must be a sequence of integers in 1..{steps}, got {at_steps!r}")
    values = list(at_steps)
    for k in values:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= steps:
            raise ConfigError(f"at_steps must hold integers in 1..{steps} (the eval inner steps), got {k!r}")
    return sorted(set(values))


def query_metrics(out: Tensor, y: Tensor, loss_fn: LossFn, loss_name: str, suffix: str = "") -> dict[str, float]:
    """Query ``loss`` (and ``accuracy`` for class labels, ``mse`` for the mse loss) of one task.

    The per-task metrics of the few-shot protocol (Finn et al. 2017); ``suffix`` is appended to
    every key (e.g. ``"@5"`` for the metrics after 5 inner steps).
    """
    metrics = {"loss" + suffix: as_float(loss_fn(out, y))}
    acc = classification_accuracy(out, y)
    if acc is not None:
        metrics["accuracy" + suffix] = as_float(acc)
    if loss_name == "mse":
        metrics["mse" + suffix] = metrics["loss" + suffix]
    return metrics


def step_metrics(outputs: Mapping[int, Tensor], steps: int, report: Iterable[int], y: Tensor, loss_fn: LossFn,
                 loss_name: str) -> dict[str, float]:
    """:func:`query_metrics` of the outputs after ``steps`` inner steps, plus those after each step of
    ``report`` suffixed ``"@k"``: what ``evaluate_task`` of MAML and Reptile returns."""
    metrics = query_metrics(outputs[steps], y, loss_fn, loss_name)
    for k in report:
        metrics.update(query_metrics(outputs[k], y, loss_fn, loss_name, f"@{k}"))
    return metrics


def _shape(t: Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def check_task_batch(
    support_x: Tensor, support_y: Tensor, query_x: Tensor | None = None, query_y: Tensor | None = None,
    *, batched: bool,
) -> None:
    """Check the shapes of one task (``batched=False``) or a batch of tasks (leading task dim).

    Support and query inputs must agree in their per-example shape, every input must have as
    many examples as its labels, and batched inputs must share the task count.  Raises
    :class:`ConfigError` naming the mismatch.  (Episodic few-shot format of Vinyals et al. 2016.)
    """
    lead = 2 if batched else 1
    pairs = [("support", support_x, support_y)]
    if query_x is not None or query_y is not None:
        if query_x is None or query_y is None:
            raise ConfigError("query_x and query_y must be given together, got only one of them")
        pairs.append(("query", query_x, query_y))
    for split, x, y in pairs:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise ConfigError(f"{split}_x and {split}_y must be tensors, got {type(x).__name__}, "
                              f"{type(y).__name__}")
        if x.dim() < lead or y.dim() < lead:
            want = "[B, n, ...]" if batched else "[n, ...]"
            raise ConfigError(f"{split}_x/{split}_y must have shape {want}, got {_shape(x)} and {_shape(y)}")
        if x.shape[:lead] != y.shape[:lead]:
            what = "task and example counts" if batched else "example counts"
            raise ConfigError(
                f"{split}_x and {split}_y {what} differ: {_shape(x)} vs {_shape(y)}"
            )
        if x.shape[lead - 1] == 0:
            raise ConfigError(f"{split} set is empty: {split}_x has shape {_shape(x)}")
    if len(pairs) == 2:
        sx, sy, qx, qy = support_x, support_y, query_x, query_y
        if batched and sx.shape[0] != qx.shape[0]:  # type: ignore[union-attr]
            raise ConfigError(f"support and query task counts differ: support_x {_shape(sx)} vs "
                              f"query_x {_shape(qx)}")  # type: ignore[arg-type]
        if sx.shape[lead:] != qx.shape[lead:] or sy.shape[lead:] != qy.shape[lead:]:  # type: ignore
            raise ConfigError(
                f"support and query example shapes differ: support_x {_shape(sx)} vs query_x "
                f"{_shape(qx)}, support_y {_shape(sy)} vs query_y {_shape(qy)}"  # type: ignore[arg-type]
            )


# --------------------------------------------------------------------------- losses


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point() or y.is_complex():
        raise ConfigError(f"loss 'cross_entropy' needs integer class labels, got dtype {y.dtype}")
    return F.cross_entropy(logits, y)


def _mse(out: Tensor, y: Tensor) -> Tensor:
    if out.shape != y.shape:
        raise ConfigError(f"loss 'mse' needs outputs and targets of one shape, got {_shape(out)} "
                          f"vs {_shape(y)}")
    return F.mse_loss(out, y.to(out.dtype))


_LOSSES: dict[str, LossFn] = {"cross_entropy": _cross_entropy, "mse": _mse}


def resolve_loss(loss: str | LossFn) -> tuple[LossFn, str]:
    """Map ``"cross_entropy"``, ``"mse"`` or a callable ``(outputs, targets) -> scalar`` to a loss.

    Returns the function and a display name.  The task losses of MAML (Finn et al. 2017):
    cross-entropy for classification, mean squared error for regression.
    """
    if callable(loss):
        return loss, getattr(loss, "__name__", type(loss).__name__)
    if isinstance(loss, str) and loss in _LOSSES:
        return _LOSSES[loss], loss
    raise ConfigError(f"loss must be one of {sorted(_LOSSES)} or a callable, got {loss!r}")


def classification_accuracy(logits: Tensor, y: Tensor) -> Tensor | None:
    """Fraction of correct arg-max predictions, or ``None`` when ``y`` are not class labels.

    The few-shot accuracy of Vinyals et al. 2016 / Finn et al. 2017, as a 0-dim tensor.
    """
    if y.is_floating_point() or y.is_complex() or logits.dim() != 2 or y.dim() != 1:
        return None
    return (logits.argmax(dim=-1) == y).to(logits.dtype).mean()


# --------------------------------------------------------------------------- parameters


def select_params(names: Iterable[str], pattern: str | None) -> list[str]:
    """Names matched (``re.search``) by ``pattern``; all names when ``pattern`` is ``None``.

    Chooses the parameters an inner loop adapts, e.g. ``r"^head\\."`` for ANIL (Raghu et al. 2020).
    Raises :class:`ConfigError` when the regex is invalid or matches nothing.
    """
    names = list(names)
    if pattern is None:
        return names
    if not isinstance(pattern, str):
        raise ConfigError(f"adapt must be None or a regex string, got {pattern!r}")
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"adapt regex {pattern!r} is invalid: {exc}") from exc
    chosen = [n for n in names if rx.search(n)]
    if not chosen:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise ConfigError(f"adapt regex {pattern!r} matches no parameter (parameters: {shown})")
    return chosen


def detach_params(params: Mapping[str, Tensor]) -> ParamDict:
    """A copy of the dict whose tensors are detached from any autograd graph (no data copy).

    How first-order MAML (Finn et al. 2017) and Reptile (Nichol et al. 2018) cut the outer graph.
    """
    return {k: v.detach() for k, v in params.items()}


def has_running_stats(model: nn.Module) -> bool:
    """Whether any BatchNorm-style layer of ``model`` keeps running statistics buffers.

    Such models need care under MAML's batch-statistics convention (Finn et al. 2017).
    """
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in model.modules()
    )


@contextmanager
def training_mode(model: nn.Module, mode: bool = True) -> Iterator[nn.Module]:
    """Context manager: put ``model`` in train (or eval) mode, restoring every submodule after.

    MAML (Finn et al. 2017) normalises with batch statistics in training and at test; running the
    functional forward in train mode gives that convention for models with running statistics too.
    """
    saved = [(m, m.training) for m in model.modules()]
    if all(flag == mode for _, flag in saved):
        yield model
        return
    model.train(mode)
    try:
        yield model
    finally:
        for m, flag in saved:
            m.training = flag


def require_head(model: nn.Module, algorithm: str) -> None:
    """Raise :class:`ConfigError` for a headless registry backbone given to a classifier-adapting
    algorithm (MAML, Finn et al. 2017; Reptile, Nichol et al. 2018), which would otherwise adapt
    raw features as if they were outputs."""
    if getattr(model, "head", "absent") is None:
        raise ConfigError(f"{algorithm} needs a backbone with a head (create_backbone(..., "
                          "num_classes=N)), got a headless one")


# --------------------------------------------------------------------------- forward plans

_Op = tuple[str, str, Any]  # (kind, parameter prefix, module)
_LEAVES = (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Tanh, nn.GELU, nn.MaxPool2d, nn.Flatten,
           nn.Linear, nn.Identity)


class _Unsupported(Exception):
    pass


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_backward_pre_hooks", None))


def _flatten_ops(module: nn.Module, prefix: str, ops: list[_Op]) -> None:
    if _has_hooks(module):
        raise _Unsupported("hooks")
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        for name, child in module.named_children():
            _flatten_ops(child, f"{prefix}{name}.", ops)
        return
    if type(module) not in _LEAVES:
        raise _Unsupported(type(module).__name__)
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise _Unsupported("padding_mode")
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        raise _Unsupported("return_indices")
    if isinstance(module, nn.Identity):
        return
    ops.append((type(module).__name__, prefix, module))


def _reorder(ops: list[_Op]) -> list[_Op]:
    """Swap every ``ReLU -> MaxPool2d`` pair: ``relu(maxpool(x)) == maxpool(relu(x))`` exactly.

    ReLU is monotone, so both orders give the same values, and the gradient goes to the same
    (first) arg-max, where ReLU's mask is the same; ReLU then runs on a pooled, smaller tensor.
    """
    out = list(ops)
    i = 0
    while i < len(out) - 1:
        if out[i][0] == "ReLU" and out[i + 1][0] == "MaxPool2d":
            out[i], out[i + 1] = out[i + 1], out[i]
            i += 2
        else:
            i += 1
    return out


_IM2COL_MAX = 27  # in_channels * kernel area up to which a CPU convolution runs as one matrix product


def _unfold_rows(x: Tensor, m: nn.Conv2d) -> Tensor:
    """The ``[N*Ho*Wo, Cin*k*k]`` patch matrix of ``x`` for convolution ``m``, rows in channels-last order."""
    cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # [N, Cin*k*k, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


class _PatchMatmul(torch.autograd.Function):
    """``unfold(x) @ w2 (+ b)`` that keeps ``x``, not its ``k*k`` times larger patch matrix, for backward.

    The patch matrix is recomputed in backward (a cheap copy). ``backward`` is written with
    differentiable operations, so second-order MAML can differentiate through it, also under
    ``torch.func.grad``.
    """

    @staticmethod
    def forward(x: Tensor, w2: Tensor, b: Tensor | None, m: nn.Conv2d) -> Tensor:  # type: ignore[override]
        cols = _unfold_rows(x, m)
        return cols @ w2 if b is None else torch.addmm(b, cols, w2)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, w2, b, m = inputs
        ctx.save_for_backward(x, w2)
        ctx.conv = m

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, w2 = ctx.saved_tensors
        m = ctx.conv
        grad_x = grad_w2 = grad_b = None
        if ctx.needs_input_grad[1]:
            grad_w2 = _unfold_rows(x, m).t() @ grad
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        if ctx.needs_input_grad[0]:
            n, _, h, w = x.shape
            rows = grad @ w2.t()  # [N*L, Cin*k*k]
            rows = rows.view(n, -1, rows.shape[1]).transpose(1, 2)
            grad_x = F.fold(rows, (h, w), m.kernel_size, m.dilation, m.padding, m.stride)
        return grad_x, grad_w2, grad_b, None


def _conv_im2col(x: Tensor, w: Tensor, b: Tensor | None, m: nn.Conv2d) -> Tensor:
    """``conv2d`` as unfold + one matrix product, returned in channels-last order (no copy).

    For the first layer of an image network (few input channels) PyTorch's CPU convolution is
    slow, its weight gradient most of all (a reduction of length ``N*H*W`` done in small
    pieces); here it is a single ``[N*H*W, Cin*k*k] x [Cin*k*k, Cout]`` product and its
    gradient one product with a long inner dimension (:class:`_PatchMatmul`).
    """
    n, _, h, wd = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    # contiguous [Cin*k*k, Cout]: the weight gradient is then cols^T @ grad, the fast orientation
    # of this long-inner-dimension product (grad^T @ cols is several times slower)
    w2 = w.reshape(w.shape[0], -1).t().contiguous()
    out = _PatchMatmul.apply(x, w2, b, m)
    return out.view(n, ho, wo, w.shape[0]).permute(0, 3, 1, 2)


_RUNNING_STATS = ("ignore", "update", "use", "module")


def _bn_momentum(m: nn.modules.batchnorm._NormBase) -> float:
    """The update factor ``m.train()`` would use now, counting the batch as ``nn.BatchNorm`` does."""
    if m.num_batches_tracked is not None:
        m.num_batches_tracked.add_(1)
    if m.momentum is None:
        return 1.0 / float(m.num_batches_tracked)
    return float(m.momentum)


class ForwardPlan:
    """A model's forward pass as a flat list of ``torch.nn.functional`` calls, fed by a param dict.

    Built by :func:`forward_plan` for models made of ``nn.Sequential`` containers and the
    registry's ``Backbone`` around Conv2d, BatchNorm1d/2d, ReLU, MaxPool2d, Flatten, Linear
    and Identity layers (``mlp`` and ``conv4``), the networks of MAML (Finn et al. 2017). It
    computes the same function as ``functional_call(model, params, x)`` in train mode, with
    BatchNorm always on batch statistics, and is faster on CPU:

    * ``ReLU -> MaxPool2d`` pairs run as ``MaxPool2d -> ReLU`` (exactly equal values and
      gradients; ReLU and its backward touch a quarter of the elements);
    * with ``channels_last``, image activations are kept in channels-last memory order, where
      PyTorch's CPU max-pooling, BatchNorm and convolution kernels are vectorised over channels;
    * on CPU, convolutions with few input channels (``Cin * k * k <= 27``, the first layer of an
      image network) run as unfold + one matrix product (:func:`_conv_im2col`).

    Running-statistics buffers are neither used nor updated (MAML's batch-statistics convention).
    """

    def __init__(self, model: nn.Module, channels_last: bool = True) -> None:
        ops: list[_Op] = []
        self._backbone = None
        if _has_hooks(model):
            raise _Unsupported("hooks")
        if (isinstance(model, Backbone) and type(model).forward is Backbone.forward
                and type(model).forward_features is Backbone.forward_features):
            self._backbone = model
            _flatten_ops(model.features, "features.", ops)
            if model.head is not None:
                _flatten_ops(model.head, "head.", ops)
        else:
            _flatten_ops(model, "", ops)
        if not ops:
            raise _Unsupported("empty")
        self.ops = _reorder(ops)
        self.channels_last = bool(channels_last)

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, running_stats: str = "ignore",
                 channels_last: bool | None = None) -> Tensor:
        """The model's output on ``x`` with parameters ``params`` (names as ``named_parameters``).

        ``running_stats`` says what BatchNorm layers that track running statistics do:
        ``"ignore"`` (default): batch statistics, buffers untouched (MAML's convention);
        ``"update"``: batch statistics, buffers updated in place as ``module.train()`` would;
        ``"use"``: normalise with the running statistics, as ``module.eval()`` would;
        ``"module"``: each layer as its own ``training`` flag says (``"update"`` or ``"use"``),
        i.e. exactly what calling the module does.

        ``channels_last`` overrides the plan's memory order for this call (``None``: the plan's).
        ``False`` suits passes that are differentiated twice, such as second-order MAML's support
        pass: PyTorch's CPU double-backward kernels are slower on channels-last activations.
        """
        if running_stats not in _RUNNING_STATS:
            raise ConfigError(f"running_stats must be one of {list(_RUNNING_STATS)}, got {running_stats!r}")
        bb = self._backbone
        if bb is not None and tuple(x.shape[1:]) != bb.input_shape:
            bb.check_input(x)
        batched = torch._C._functorch.is_batchedtensor(x)
        cl = (self.channels_last if channels_last is None else channels_last) and not batched
        for kind, pre, m in self.ops:
            if kind == "Conv2d":
                w, b = params[pre + "weight"], params.get(pre + "bias")
                if cl and x.dim() == 4 and m.groups == 1 and w[0].numel() <= _IM2COL_MAX and x.device.type == "cpu":
                    x = _conv_im2col(x, w, b, m)
                    continue
                if cl and x.dim() == 4 and x.shape[1] > 1:
                    x = x.contiguous(memory_format=torch.channels_last)
                x = F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups)
                if cl and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
            elif kind in ("BatchNorm2d", "BatchNorm1d"):
                w = params[pre + "weight"] if m.affine else None
                b = params[pre + "bias"] if m.affine else None
                mode = running_stats if running_stats != "module" else ("update" if m.training else "use")
                if mode == "ignore" or not m.track_running_stats:
                    x = F.batch_norm(x, None, None, w, b, True, 0.0, m.eps)
                elif mode == "use":
                    x = F.batch_norm(x, m.running_mean, m.running_var, w, b, False, 0.0, m.eps)
                else:
                    x = F.batch_norm(x, m.running_mean, m.running_var, w, b, True, _bn_momentum(m), m.eps)
            elif kind == "ReLU":
                x = F.relu(x)
            elif kind == "Tanh":
                x = torch.tanh(x)
            elif kind == "GELU":
                x = F.gelu(x, approximate=m.approximate)
            elif kind == "MaxPool2d":
                x = F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
            elif kind == "Flatten":
                x = x.flatten(m.start_dim, m.end_dim)
            else:  # Linear
                x = F.linear(x, params[pre + "weight"], params.get(pre + "bias"))
        return x


_PLANS: weakref.WeakKeyDictionary[nn.Module, ForwardPlan | None] = weakref.WeakKeyDictionary()


def forward_plan(model: nn.Module) -> ForwardPlan | None:
    """The cached :class:`ForwardPlan` of ``model``, or ``None`` when its layers are not all supported.

    Used by :func:`functional_forward` for the inner loops of MAML (Finn et al. 2017) and
    Reptile (Nichol et al. 2018). Plans are built once per module (the layer list is assumed
    fixed after construction); a model with hooks or other layer types gets ``None``.
    """
    if model in _PLANS:
        return _PLANS[model]
    try:
        plan: ForwardPlan | None = ForwardPlan(model)
    except _Unsupported:
        plan = None
    _PLANS[model] = plan
    return plan


def functional_forward(
    model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor,
    channels_last: bool | None = None,
) -> Tensor:
    """``model(x)`` evaluated with ``params`` (and ``buffers``) through ``functional_call``.

    The model runs in train mode, i.e. BatchNorm uses the statistics of ``x`` (the MAML
    convention, Finn et al. 2017).  Buffers are passed as fresh clones, so the in-place
    running-statistics update of a BatchNorm that tracks them lands on a throw-away copy: the
    module's own buffers are never modified.  Models without buffers pay nothing for this.
    Models that :func:`forward_plan` understands (``mlp``, ``conv4``) run through their
    :class:`ForwardPlan` instead: the same function, faster, buffers untouched
    (``channels_last`` is passed on to the plan).
    """
    plan = forward_plan(model)
    if plan is not None:
        return plan(params, x, channels_last=channels_last)
    bufs = {k: v.clone() for k, v in buffers.items()} if buffers else {}
    with training_mode(model, True):
        return functional_call(model, (dict(params), bufs), (x,), strict=False, tie_weights=False)


# --------------------------------------------------------------------------- inner loop

StepLoss = Callable[[ParamDict, int], Tensor]
StepLr = Callable[[int, str], "float | Tensor"]


def inner_loop(
    step_loss: StepLoss,
    params: Mapping[str, Tensor],
    adapt_names: Iterable[str],
    steps: int,
    lr: StepLr,
    *,
    first_order: bool = False,
    track: bool = True,
    step_params: Callable[[ParamDict, int], ParamDict] | None = None,
) -> list[ParamDict]:
    """Run ``steps`` gradient steps ``theta <- theta - lr * grad`` on the adapted subset of ``params``.

    This is the inner loop of MAML (Finn et al. 2017) and its variants: Meta-SGD (Li et al. 2017)
    and MAML++ LSLR (Antoniou et al. 2019) pass learning rates as tensors through ``lr``; ANIL
    (Raghu et al. 2020) passes only the head's names in ``adapt_names``.

    Args:
        step_loss: ``(full_params, step) -> scalar`` support loss evaluated at inner step ``step``.
        params: the starting (meta-learned) parameters, all of them.
        adapt_names: names of the parameters the loop updates; the others stay as given.
        steps: number of inner updates (>= 1).
        lr: ``(step, name) -> learning rate`` (a float or a tensor broadcastable to the param).
        first_order: drop second-order terms (FOMAML): inner gradients are computed on detached
            parameters (and detached ``step_params`` swaps), so the returned params depend on
            ``params`` only through the identity path (and on tensor learning rates through
            ``- lr * g``).
        track: keep the outer graph at all; ``False`` detaches ``params`` first (evaluation).
        step_params: optional ``(full_params, step) -> full_params`` hook applied before each
            step's loss (MAML++ per-step BatchNorm swaps in step ``step``'s weights here).

    Returns:
        ``steps + 1`` full parameter dicts: the start, then the params after each update.
    """
    names = list(adapt_names)
    current: ParamDict = dict(params) if track else detach_params(params)
    history = [current]
    for step in range(steps):
        adapted = {n: current[n] for n in names}
        fixed = {k: v for k, v in current.items() if k not in adapted}
        if first_order or not track:
            adapted_in = detach_params(adapted)
            fixed_in = detach_params(fixed)
        else:
            adapted_in, fixed_in = adapted, fixed

        def loss_of(a: ParamDict, fixed_in: ParamDict = fixed_in, step: int = step) -> Tensor:
            full = {**fixed_in, **a}
            if step_params is not None:
                full = step_params(full, step)
                if first_order or not track:  # what the hook swaps in is constant here too
                    full = {k: v if k in a else v.detach() for k, v in full.items()}
            return step_loss(full, step)

        grads = grad(loss_of)(adapted_in)
        new = dict(current)
        for n in names:
            new[n] = current[n] - lr(step, n) * grads[n]
        current = new
        history.append(current)
    return history


# --------------------------------------------------------------------------- predictor


class AdaptedPredictor:
    """The result of adapting to one task: a model plus task-specific parameters.

    ``predictor(x)`` runs ``model`` through :func:`torch.func.functional_call` with
    ``predictor.params`` (the adapted parameters of MAML, Finn et al. 2017), or, when
    ``prototypes`` is set, returns ProtoNet logits (Snell et al. 2017) computed from the
    embedding of ``x``.  It holds references only, never modifies the model, and can be used
    after the algorithm object that produced it is gone.

    Attributes:
        model: the module whose structure is evaluated.
        params: every parameter of ``model`` by name (adapted ones replaced).
        buffers: the buffers passed to ``functional_call`` (cloned per call; never updated).
        logits_fn: optional ``(outputs) -> logits`` post-processing (used by ProtoNets).
        prototypes: class prototypes ``[N, D]`` for metric-based predictors, else ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Mapping[str, Tensor],
        buffers: Mapping[str, Tensor] | None = None,
        logits_fn: Callable[[Tensor], Tensor] | None = None,
        prototypes: Tensor | None = None,
        forward: Callable[[nn.Module, Mapping[str, Tensor], Mapping[str, Tensor], Tensor], Tensor]
        | None = None,
    ) -> None:
        self.model = model
        self.params: ParamDict = dict(params)
        self.buffers: ParamDict = dict(buffers or {})
        self.logits_fn = logits_fn
        self.prototypes = prototypes
        self._forward = forward or functional_forward

    def __call__(self, x: Tensor) -> Tensor:
        """Outputs (logits for classifiers) of the adapted model on a batch ``x``."""
        out = self._forward(self.model, self.params, self.buffers, x)
        return out if self.logits_fn is None else self.logits_fn(out)

    def __repr__(self) -> str:
        kind = "prototypes" if self.prototypes is not None else "params"
        return f"AdaptedPredictor({type(self.model).__name__}, {len(self.params)} params, {kind})"


def as_float(value: Any) -> float:
    """``float(value)`` for tensors and numbers alike: the metrics of every algorithm here (MAML,
    Finn et al. 2017; Reptile; ProtoNets) are reported as Python floats."""
    return float(value.detach()) if isinstance(value, Tensor) else float(value)
