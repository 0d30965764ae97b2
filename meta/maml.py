"""MAML and relatives, functional on :mod:`torch.func`: MAML, FOMAML, Meta-SGD, ANIL, MAML++, Proto-MAML.

One class, :class:`MAML` (Finn et al. 2017, "Model-Agnostic Meta-Learning for Fast Adaptation
of Deep Networks"), implements the family through options; :class:`FOMAML`, :class:`MetaSGD`,
:class:`ANIL`, :class:`MAMLPlusPlus` and :class:`ProtoMAML` are thin subclasses that only change defaults.

Typical outer loop (the same for every algorithm of :mod:`meta`)::

    algo = MAML(create_backbone("conv4", num_classes=5, track_running_stats=False))
    opt = torch.optim.Adam(algo.parameters(), lr=1e-3)
    for it, batch in enumerate(batches):
        loss, metrics = algo.outer_loss(batch.support_x, batch.support_y,
                                        batch.query_x, batch.query_y, iteration=it)
        opt.zero_grad(); loss.backward(); opt.step()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torch.func import vmap

from meta.functional import (
    AdaptedPredictor,
    LossFn,
    ParamDict,
    as_float,
    check_positive_float,
    check_positive_int,
    check_report_steps,
    check_task_batch,
    classification_accuracy,
    functional_forward,
    has_running_stats,
    inner_loop,
    require_head,
    resolve_loss,
    select_params,
    step_metrics,
)
from meta.protonet import prototypes
from mtl.backbones.base import Backbone
from mtl.data.augment import check_test_rotate, check_test_shift, tta_views
from mtl.errors import ConfigError
from mtl.utils.precision import autocast_state, restore_autocast

__all__ = ["MAML", "FOMAML", "MetaSGD", "ANIL", "MAMLPlusPlus", "ProtoMAML", "msl_weights"]

_LEARN_LR = (None, "per_param", "per_layer_per_step")


def _key(name: str) -> str:
    """``nn.ParameterDict`` keys may not contain dots: ``head.weight`` -> ``head__weight``."""
    return name.replace(".", "__")


def _mean(outputs: list[Tensor]) -> Tensor:
    return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)


def _strip(d: Mapping[str, Tensor], prefix: str) -> ParamDict:
    """Entries of ``d`` under ``prefix``, with the prefix removed (a submodule's view)."""
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def msl_weights(steps: int, iteration: int | None, msl_iterations: int) -> list[float]:
    """Per-step query-loss weights of the MAML++ multi-step loss (Antoniou et al. 2019).

    Weights start uniform (``1/steps`` each) and move linearly to all weight on the final step
    over ``msl_iterations`` outer iterations; ``iteration=None`` means the annealing is over.
    (MAML++ keeps a small floor of ``0.03/steps`` on non-final steps; this schedule reaches
    exactly the plain MAML objective instead.)
    """
    if iteration is None or steps == 1:
        return [0.0] * (steps - 1) + [1.0]
    t = min(max(iteration, 0) / msl_iterations, 1.0)
    early = (1.0 - t) / steps
    return [early] * (steps - 1) + [1.0 - early * (steps - 1)]


class MAML(nn.Module):
    """Model-Agnostic Meta-Learning (Finn et al. 2017) with the options of its main descendants.

    The inner loop adapts a dict of parameters by ``steps`` SGD steps on the support loss
    (``functional_call`` + ``torch.func.grad``, no module copies); the outer loss is the query
    loss at the adapted parameters, differentiated through the inner loop (second order) or not
    (``first_order=True``, FOMAML).

    Args:
        model: a registry backbone with a head, e.g.
            ``create_backbone("conv4", num_classes=5, track_running_stats=False)``.
        inner_lr: inner-loop SGD step size (> 0; 0.4 as Finn et al. on Omniglot). With
            ``learn_inner_lr`` it is the initial value of the learned rates.
        inner_steps: inner steps during meta-training (>= 1).
        eval_inner_steps: inner steps at test time (:meth:`evaluate_task`, and :meth:`adapt` in
            eval mode); default ``inner_steps`` (Finn et al. used more steps at test time).
        first_order: drop the second-order terms (first-order MAML, Finn et al. 2017 sec. 5.2).
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(outputs, targets) -> scalar``.
        adapt: which parameters the inner loop adapts: ``None`` (all) or a regex searched in
            parameter names; ``r"^head\\."`` is ANIL (Raghu et al. 2020).
        learn_inner_lr: ``None`` (fixed ``inner_lr``), ``"per_param"`` (Meta-SGD, Li et al.
            2017: a learned rate tensor of each adapted parameter's shape) or
            ``"per_layer_per_step"`` (MAML++ LSLR, Antoniou et al. 2019: one learned scalar per
            adapted parameter tensor and inner step). Learned rates are ordinary parameters of
            this module, may become negative, and are applied as ``theta - lr * grad``.
        multi_step_loss: MAML++ MSL: the outer objective is a weighted sum of the query losses
            after every inner step, weights annealed to the final step (:func:`msl_weights`).
        msl_iterations: outer iterations over which the MSL weights are annealed.
        per_step_bn: MAML++ per-step BatchNorm: each inner step ``s`` (and the query pass after
            it) uses its own learned BatchNorm weight and bias, kept here in ``bn_weights``; the
            model's own BatchNorm affine parameters are then unused. These per-step parameters
            are meta-learned but not adapted in the inner loop. No per-step running statistics
            are kept: normalisation uses batch statistics (below), so they would never be read.
        first_order_until: MAML++ derivative-order annealing: first-order while
            ``iteration < first_order_until``, second-order after (``None``: off).
        head_init: ``None`` (the meta-learned head) or ``"prototypes"``: Proto-MAML
            (Triantafillou et al. 2020, "Meta-Dataset"): every task starts from a linear head
            built from the support set's class prototypes ``c_k`` (mean trunk features),
            weight ``2 c_k`` and bias ``-||c_k||^2``, so that before any inner step the logits
            rank classes as a Prototypical Network's negative squared distances do; the inner
            loop then adapts that head (and the trunk, unless ``adapt`` says otherwise). The
            number of classes is read from the support labels (``0..N-1``), so a model trained
            5-way can be tested 20-way; the model's own head parameters are not used (they keep
            their values and receive no gradient). The prototypes stay in the outer graph in
            first-order mode too (as the paper's fo-Proto-MAML). Needs a registry backbone
            whose head is a ``Linear`` with bias; refused with ``learn_inner_lr="per_param"``
            (rates shaped like one head) and ``batched=True``.
        batched: how :meth:`outer_loss` runs a batch of tasks: ``False`` a per-task loop,
            ``True`` ``torch.func.vmap`` over tasks, ``None`` the default, which is the loop:
            on a 2-core CPU, conv4 (64 filters, 28x28), 5-way 1-shot, 15 queries, 16 tasks,
            one step, median forward+backward per meta-iteration: loop 1.5-1.9 s (second
            order) and 1.3-1.4 s (first order), vmap 4.4-7.2 s and 4.1-6.1 s (under vmap,
            BatchNorm and per-task weights fall back to decompositions and grouped convs).
            ``True`` needs a model without BatchNorm running statistics, and is refused with
            second-order gradients through BatchNorm/InstanceNorm/LayerNorm, where torch's vmap
            computes a wrong double backward (pytorch/functorch#534; found by this module's tests).
        test_shift: test-time augmentation of the queries (0: off, at most 4): in eval mode,
            after adapting on the unchanged support set, the query outputs are the mean of the
            outputs on the copies of the queries shifted by up to ``test_shift`` pixels in x and
            y, each view a batch of its own (:func:`mtl.data.tta_views`). The inner loop is
            unchanged; the query passes cost that many times more. Training is unchanged.
        test_rotate: also the copies rotated by ``-test_rotate`` and ``+test_rotate`` degrees
            (0: off, at most 45; with ``test_shift``, of every shifted copy).

    BatchNorm follows the MAML convention: every forward pass (inner loop, query, test)
    normalises with the statistics of the batch it sees, in training and at test time, so build
    the model with ``track_running_stats=False``. The model is always run in train mode inside
    the algorithm. If a model with running-statistics buffers is passed anyway, the buffers go
    to ``functional_call`` as throw-away clones: they are neither updated nor used, and the
    model's own buffers stay exactly as they were.

    When only the head is adapted (ANIL) and the model is a registry ``Backbone``, trunk
    features are computed once per task instead of once per inner step (same result, faster).

    Schedules: ``iteration=None`` in :meth:`outer_loss` means the annealing schedules
    (``multi_step_loss``, ``first_order_until``) are finished: final-step loss, second order.
    With ``eval_inner_steps > inner_steps``, steps past the last trained step reuse the last
    step's learned rate (LSLR) and BatchNorm weights (per-step BN).
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int | None = None,
        first_order: bool = False,
        loss: str | LossFn = "cross_entropy",
        adapt: str | None = None,
        learn_inner_lr: str | None = None,
        multi_step_loss: bool = False,
        msl_iterations: int = 10_000,
        per_step_bn: bool = False,
        first_order_until: int | None = None,
        batched: bool | None = None,
        head_init: str | None = None,
        test_shift: int = 0,
        test_rotate: float = 0.0,
    ) -> None:
        super().__init__()
        self.test_shift = check_test_shift(test_shift)
        self.test_rotate = check_test_rotate(test_rotate)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        require_head(model, type(self).__name__)
        self.model = model
        self.inner_lr = check_positive_float("inner_lr", inner_lr)
        self.inner_steps = check_positive_int("inner_steps", inner_steps)
        self.eval_inner_steps = check_positive_int(
            "eval_inner_steps", inner_steps if eval_inner_steps is None else eval_inner_steps
        )
        self.first_order = bool(first_order)
        self.loss_fn, self.loss_name = resolve_loss(loss)
        if learn_inner_lr not in _LEARN_LR:
            raise ConfigError(f"learn_inner_lr must be one of {list(_LEARN_LR)}, got {learn_inner_lr!r}")
        self.learn_inner_lr = learn_inner_lr
        self.multi_step_loss = bool(multi_step_loss)
        self.msl_iterations = check_positive_int("msl_iterations", msl_iterations)
        if first_order_until is not None and (
            isinstance(first_order_until, bool) or not isinstance(first_order_until, int)
            or first_order_until < 0
        ):
            raise ConfigError(f"first_order_until must be None or an integer >= 0, got {first_order_until!r}")
        self.first_order_until = first_order_until
        if batched not in (None, True, False):
            raise ConfigError(f"batched must be None, True or False, got {batched!r}")
        if batched and has_running_stats(model):
            raise ConfigError("batched=True needs a model without BatchNorm running statistics "
                              "(build it with track_running_stats=False)")
        norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm)
        if batched and not self.first_order and any(isinstance(m, norm_types) for m in model.modules()):
            raise ConfigError(
                "batched=True with second-order gradients is refused for models with BatchNorm, "
                "InstanceNorm or LayerNorm (torch's vmap gives wrong double backward through them, "
                "pytorch/functorch#534); use batched=False or first_order=True"
            )
        self.batched = batched
        if head_init not in (None, "prototypes"):
            raise ConfigError(f"head_init must be None or 'prototypes', got {head_init!r}")
        if head_init is not None:
            head = getattr(model, "head", None)
            if not (isinstance(model, Backbone) and isinstance(head, nn.Linear) and head.bias is not None):
                raise ConfigError("head_init='prototypes' needs a registry backbone with a Linear head with "
                                  f"bias, got {type(model).__name__}")
            if learn_inner_lr == "per_param":
                raise ConfigError("head_init='prototypes' builds a head per task, of any number of classes; "
                                  "learn_inner_lr='per_param' learns rates shaped like one head")
            if batched:
                raise ConfigError("head_init='prototypes' reads the number of classes from each task's labels; "
                                  "it needs batched=False")
        self.head_init = head_init
        self.per_step_bn = bool(per_step_bn)
        self.adapt_pattern = adapt

        names = [n for n, _ in model.named_parameters()]
        if not names:
            raise ConfigError(f"model {type(model).__name__} has no parameters to meta-learn")
        bn_names: list[str] = []
        if self.per_step_bn:
            for mod_name, mod in model.named_modules():
                if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.affine:
                    bn_names += [f"{mod_name}.weight", f"{mod_name}.bias"]
            if not bn_names:
                raise ConfigError(f"per_step_bn=True but model {type(model).__name__} has no "
                                  "affine BatchNorm layer")
        self._bn_names = bn_names
        chosen = select_params(names, adapt)
        self.adapt_names: list[str] = [n for n in chosen if n not in set(bn_names)]
        if not self.adapt_names:
            raise ConfigError(f"adapt regex {adapt!r} matches only BatchNorm parameters, which "
                              "per_step_bn=True learns per step instead")

        params = dict(model.named_parameters())
        self.inner_lrs: nn.ParameterDict | None = None
        if learn_inner_lr == "per_param":
            self.inner_lrs = nn.ParameterDict({
                _key(n): nn.Parameter(torch.full_like(params[n].detach(), self.inner_lr))
                for n in self.adapt_names
            })
        elif learn_inner_lr == "per_layer_per_step":
            self.inner_lrs = nn.ParameterDict({
                _key(n): nn.Parameter(torch.full((self.inner_steps,), self.inner_lr,
                                                 dtype=params[n].dtype, device=params[n].device))
                for n in self.adapt_names
            })
        self.bn_weights: nn.ParameterDict | None = None
        if bn_names:
            self.bn_weights = nn.ParameterDict({
                _key(n): nn.Parameter(params[n].detach().clone().unsqueeze(0)
                                      .repeat(self.inner_steps, *([1] * params[n].dim())))
                for n in bn_names
            })
        self._head_only = (
            not bn_names and isinstance(model, Backbone) and model.head is not None
            and all(n.startswith("head.") for n in self.adapt_names)
        )

    # ------------------------------------------------------------------ pieces

    def _model_params(self) -> ParamDict:
        return dict(self.model.named_parameters())

    def _model_buffers(self) -> ParamDict:
        return dict(self.model.named_buffers())

    def _lr(self, step: int, name: str) -> float | Tensor:
        if self.inner_lrs is None:
            return self.inner_lr
        lr = self.inner_lrs[_key(name)]
        if self.learn_inner_lr == "per_layer_per_step":
            return lr[min(step, lr.shape[0] - 1)]
        return lr

    def _with_step_bn(self, params: ParamDict, step: int) -> ParamDict:
        """``params`` with per-step BatchNorm weights of inner step ``step`` swapped in."""
        if self.bn_weights is None:
            return params
        out = dict(params)
        for n in self._bn_names:
            w = self.bn_weights[_key(n)]
            out[n] = w[min(step, w.shape[0] - 1)]
        return out

    @property
    def _test_views(self) -> bool:
        return not self.training and (self.test_shift > 0 or self.test_rotate > 0)

    def _query_views(self, queries: Tensor) -> list[Tensor]:
        """The query batch, or in eval mode with ``test_shift``/``test_rotate`` its test-time views."""
        return tta_views(queries, self.test_shift, self.test_rotate) if self._test_views else [queries]

    def _check_model_input(self, x: Tensor) -> None:
        check = getattr(self.model, "check_input", None)
        if callable(check):
            check(x)

    def _first_order_at(self, iteration: int | None) -> bool:
        if self.first_order:
            return True
        until = self.first_order_until
        return until is not None and iteration is not None and iteration < until

    @staticmethod
    def _prototype_head(features: Tensor, sy: Tensor) -> tuple[Tensor, Tensor]:
        """Proto-MAML's head (Triantafillou et al. 2020): weight ``2 c_k``, bias ``-||c_k||^2``."""
        protos = prototypes(features, sy)
        return 2 * protos, -(protos * protos).sum(1)

    def _run_task(
        self, params: ParamDict, sx: Tensor, sy: Tensor, steps: int, *, first_order: bool, track: bool,
        queries: Tensor | None = None, out_steps: Sequence[int] | None = None,
    ) -> tuple[list[ParamDict], list[Tensor]]:
        """Adapt on ``(sx, sy)``; return the adapted-param history and query outputs.

        Query outputs are computed after each step of ``out_steps`` (default: the final step),
        each with the BatchNorm weights of the step that produced it.
        """
        if self._head_only:
            return self._run_task_head(params, sx, sy, steps, first_order=first_order, track=track,
                                       queries=queries, out_steps=out_steps)
        buffers = self._model_buffers()
        if self.head_init is not None:
            trunk = _strip(self._with_step_bn(params, 0), "features.")
            if not track:
                trunk = {k: v.detach() for k, v in trunk.items()}
            fs = functional_forward(self.model.features, trunk, _strip(buffers, "features."), sx)
            w, b = self._prototype_head(fs, sy)
            params = {**params, "head.weight": w, "head.bias": b}
        # support passes differentiated twice run channels-first (faster double backward on CPU)
        channels_last = False if track and not first_order else None

        def step_loss(full: ParamDict, step: int) -> Tensor:
            return self.loss_fn(functional_forward(self.model, full, buffers, sx, channels_last=channels_last), sy)

        history = inner_loop(step_loss, params, self.adapt_names, steps, self._lr,
                             first_order=first_order, track=track, step_params=self._with_step_bn)
        outs: list[Tensor] = []
        if queries is not None:
            views = self._query_views(queries)
            for k in out_steps or [steps]:
                full = self._with_step_bn(history[k], k - 1)
                outs.append(_mean([functional_forward(self.model, full, buffers, v) for v in views]))
        return history, outs

    def _run_task_head(
        self, params: ParamDict, sx: Tensor, sy: Tensor, steps: int, *, first_order: bool, track: bool,
        queries: Tensor | None, out_steps: Sequence[int] | None,
    ) -> tuple[list[ParamDict], list[Tensor]]:
        """Head-only adaptation (ANIL): trunk features once per task, inner loop on the head."""
        model = self.model
        buffers = self._model_buffers()
        trunk, tbuf = _strip(params, "features."), _strip(buffers, "features.")
        head, hbuf = _strip(params, "head."), _strip(buffers, "head.")
        if not track:
            trunk = {k: v.detach() for k, v in trunk.items()}
        self._check_model_input(sx)
        fs = functional_forward(model.features, trunk, tbuf, sx)
        fs_inner = fs.detach() if (first_order or not track) else fs
        if self.head_init is not None:
            w, b = self._prototype_head(fs, sy)
            head = {**head, "weight": w, "bias": b}
            params = {**params, "head.weight": w, "head.bias": b}
        adapt = [n[len("head."):] for n in self.adapt_names]

        def step_loss(full: ParamDict, step: int) -> Tensor:
            return self.loss_fn(functional_forward(model.head, full, hbuf, fs_inner), sy)

        def lr(step: int, name: str) -> float | Tensor:
            return self._lr(step, "head." + name)

        hist = inner_loop(step_loss, head, adapt, steps, lr, first_order=first_order, track=track)
        others = {n: v for n, v in params.items() if not n.startswith("head.")}
        history = [{**others, **{"head." + k: v for k, v in h.items()}} for h in hist]
        outs: list[Tensor] = []
        if queries is not None:
            self._check_model_input(queries)
            fqs = [functional_forward(model.features, trunk, tbuf, v) for v in self._query_views(queries)]
            for k in out_steps or [steps]:
                outs.append(_mean([functional_forward(model.head, hist[k], hbuf, fq) for fq in fqs]))
        return history, outs

    def _task_objective(
        self, params: ParamDict, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor,
        first_order: bool, weights: list[float] | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(objective, final query loss, final accuracy or None) for one task, with graph."""
        _, outs = self._run_task(params, sx, sy, self.inner_steps, first_order=first_order, track=True,
                                 queries=qx, out_steps=None if weights is None else range(1, self.inner_steps + 1))
        losses = [self.loss_fn(o, qy) for o in outs]
        final = losses[-1]
        if weights is None:
            objective = final
        else:
            objective = sum(w * lo for w, lo in zip(weights, losses) if w != 0.0)
        return objective, final, classification_accuracy(outs[-1].detach(), qy)  # type: ignore[return-value]

    # ------------------------------------------------------------------ public API

    def adapt(
        self, support_x: Tensor, support_y: Tensor, *, steps: int | None = None,
        first_order: bool | None = None,
    ) -> AdaptedPredictor:
        """Adapt to one task (no task dim); return an :class:`AdaptedPredictor` (MAML, Finn et al. 2017).

        ``steps`` defaults to ``inner_steps`` in train mode and ``eval_inner_steps`` in eval
        mode. The adapted parameters stay differentiable w.r.t. the meta-parameters when grad
        mode is enabled (second order unless ``first_order``); under ``torch.no_grad()`` they are
        plain tensors. The model's parameters are never modified. In eval mode with ``test_shift``
        or ``test_rotate``, the predictor returns the mean output over the test-time views of
        its input.
        """
        check_task_batch(support_x, support_y, batched=False)
        if steps is None:
            steps = self.inner_steps if self.training else self.eval_inner_steps
        steps = check_positive_int("steps", steps)
        fo = self.first_order if first_order is None else bool(first_order)
        self._check_model_input(support_x)
        history, _ = self._run_task(self._model_params(), support_x, support_y, steps, first_order=fo,
                                    track=torch.is_grad_enabled())
        final = self._with_step_bn(history[-1], steps - 1)
        if not self._test_views:
            return AdaptedPredictor(self.model, final, self._model_buffers())

        shift, degrees = self.test_shift, self.test_rotate

        def forward(model: nn.Module, p: Mapping[str, Tensor], b: Mapping[str, Tensor], x: Tensor) -> Tensor:
            return _mean([functional_forward(model, p, b, v) for v in tta_views(x, shift, degrees)])

        return AdaptedPredictor(self.model, final, self._model_buffers(), forward=forward)

    def outer_loss(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        iteration: int | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Mean query loss over a batch of tasks (leading task dim) after inner adaptation.

        The MAML meta-objective (Finn et al. 2017, eq. 1/Alg. 2); ``.backward()`` gives the
        meta-gradient on :meth:`parameters`. Metrics: ``loss`` (mean final-step query loss),
        ``accuracy`` (classification only) and, with the multi-step loss, ``objective`` (the
        weighted loss actually returned). ``iteration`` drives the MAML++ schedules.
        """
        fo, weights, params = self._outer_setup(support_x, support_y, query_x, query_y, iteration)
        if self.batched:
            objective, final, acc = self._outer_vmap(params, support_x, support_y, query_x, query_y,
                                                     fo, weights)
        else:
            objective, final, acc = self._task_loop(params, support_x, support_y, query_x, query_y, fo, weights,
                                                    backward=False)
        return objective, self._outer_metrics(objective, final, acc, weights)

    def _outer_setup(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                     iteration: int | None) -> tuple[bool, Tensor | None, ParamDict]:
        """Check a task batch; return the derivative order, the multi-step loss weights and the parameters."""
        check_task_batch(support_x, support_y, query_x, query_y, batched=True)
        self._check_model_input(support_x[0])
        self._check_model_input(query_x[0])
        weights = (msl_weights(self.inner_steps, iteration, self.msl_iterations)
                   if self.multi_step_loss and self.inner_steps > 1 else None)
        return self._first_order_at(iteration), weights, self._model_params()

    def _task_loop(self, params: ParamDict, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, fo: bool,
                   weights: Tensor | None, backward: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Tasks one at a time: batch means of the objective, the final query loss and the accuracy.

        With ``backward`` each task's share of the mean objective is back-propagated before the
        next task runs (and the returned objective is detached).
        """
        n_tasks = sx.shape[0]
        objs, finals, accs = [], [], []
        for b in range(n_tasks):
            o, f, a = self._task_objective(params, sx[b], sy[b], qx[b], qy[b], fo, weights)
            if backward:
                (o / n_tasks).backward()
                o = o.detach()
            objs.append(o)
            finals.append(f.detach())
            if a is not None:
                accs.append(a)
        return torch.stack(objs).mean(), torch.stack(finals).mean(), torch.stack(accs).mean() if accs else None

    @staticmethod
    def _outer_metrics(objective: Tensor, final: Tensor, acc: Tensor | None,
                       weights: Tensor | None) -> dict[str, float]:
        metrics = {"loss": as_float(final)}
        if acc is not None:
            metrics["accuracy"] = as_float(acc)
        if weights is not None:
            metrics["objective"] = as_float(objective)
        return metrics

    def outer_backward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        iteration: int | None = None, workers: int = 1,
    ) -> dict[str, float]:
        """``outer_loss(...)[0].backward()`` computed task by task: same gradients, less memory.

        Accumulates the MAML meta-gradient (Finn et al. 2017) of the batch mean into ``.grad``
        (like ``backward()``), back-propagating each task's share before the next task's inner
        loop runs, so only one task's graph is alive at a time; peak memory no longer grows
        with the meta-batch. Returns the metrics of :meth:`outer_loss`. With ``batched=True``
        it is ``outer_loss`` followed by ``backward()``.

        ``workers > 1`` runs the tasks on that many Python threads (task ``b`` on worker
        ``b % workers``), each with ``torch.get_num_threads() // workers`` (at least one)
        intra-op threads, and adds the workers' gradient sums to ``.grad`` in worker order: the
        same gradients up to float rounding, deterministic for a fixed ``workers``, with
        ``workers`` task graphs alive at once (that many times the memory). On a multi-core
        CPU this uses the cores better than intra-op threading of small convolutions; see
        ``docs/performance.md`` for when it pays.
        """
        workers = check_positive_int("workers", workers)
        if self.batched:
            if workers > 1:
                raise ConfigError(f"workers={workers} needs batched=False (vmap already batches the tasks)")
            loss, metrics = self.outer_loss(support_x, support_y, query_x, query_y, iteration=iteration)
            loss.backward()
            return metrics
        fo, weights, params = self._outer_setup(support_x, support_y, query_x, query_y, iteration)
        if workers > 1 and support_x.shape[0] > 1:
            objective, final, acc = self._threaded_task_loop(params, support_x, support_y, query_x, query_y,
                                                             fo, weights, workers)
        else:
            objective, final, acc = self._task_loop(params, support_x, support_y, query_x, query_y, fo, weights,
                                                    backward=True)
        return self._outer_metrics(objective, final, acc, weights)

    def _threaded_task_loop(
        self, params: ParamDict, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, fo: bool,
        weights: list[float] | None, workers: int,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`_task_loop` with ``backward`` on ``workers`` threads; gradients go to ``.grad``."""
        n_tasks = sx.shape[0]
        workers = min(workers, n_tasks)
        leaves = [p for p in self.parameters() if p.requires_grad]
        caller_threads = torch.get_num_threads()
        intra = max(1, caller_threads // workers)
        grad_on = torch.is_grad_enabled()
        device_type = sx.device.type
        mixed = autocast_state(device_type)  # grad mode and autocast are per thread: the workers take the caller's

        def work(w: int) -> tuple[list[Tensor | None], list[tuple[int, Tensor, Tensor, Tensor | None]]]:
            torch.set_num_threads(intra)  # OpenMP's thread count is per calling thread
            total: list[Tensor | None] = [None] * len(leaves)
            rows = []
            with torch.set_grad_enabled(grad_on), restore_autocast(device_type, mixed):
                for b in range(w, n_tasks, workers):
                    o, f, a = self._task_objective(params, sx[b], sy[b], qx[b], qy[b], fo, weights)
                    grads = torch.autograd.grad(o / n_tasks, leaves, allow_unused=True)
                    total = [g if t is None else (t if g is None else t + g) for t, g in zip(total, grads)]
                    rows.append((b, o.detach(), f.detach(), a))
            return total, rows

        # torch creates a leaf's gradient accumulator on first use, holding the leaf's autograd lock
        # while it takes the GIL; a worker that holds the GIL and waits for that lock (any autograd
        # op on the same parameter) then deadlocks with it. Created here and kept alive until the
        # workers are done, the accumulators leave them nothing to create.
        accumulators = [p.view_as(p) for p in leaves]  # views hold them without exposing them to Python
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maml-task") as pool:
                results = list(pool.map(work, range(workers)))
        finally:
            torch.set_num_threads(caller_threads)
            del accumulators
        for total, _ in results:
            for p, g in zip(leaves, total):
                if g is not None and p.grad is None:
                    p.grad = g
                elif g is not None:
                    p.grad.add_(g)
        rows = sorted((r for _, rs in results for r in rs), key=lambda r: r[0])
        accs = [r[3] for r in rows if r[3] is not None]
        return (torch.stack([r[1] for r in rows]).mean(), torch.stack([r[2] for r in rows]).mean(),
                torch.stack(accs).mean() if accs else None)

    def _outer_vmap(
        self, params: ParamDict, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, first_order: bool,
        weights: list[float] | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        is_cls = not (qy.is_floating_point() or qy.is_complex())

        def one(sx1: Tensor, sy1: Tensor, qx1: Tensor, qy1: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            o, f, a = self._task_objective(params, sx1, sy1, qx1, qy1, first_order, weights)
            return o, f, (a if a is not None else f.new_zeros(()))

        objs, finals, accs = vmap(one)(sx, sy, qx, qy)
        return objs.mean(), finals.detach().mean(), (accs.mean() if is_cls else None)

    def evaluate_task(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        at_steps: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """Adapt with ``eval_inner_steps`` (no outer graph) and report query ``loss``/``accuracy``.

        The test protocol of MAML (Finn et al. 2017): one task, no task dim. With the ``"mse"``
        loss the loss is also reported as ``mse``. ``at_steps`` (each in ``1..eval_inner_steps``)
        adds the same metrics after those steps of the same adaptation, keyed ``"accuracy@5"``
        etc.: one run compares several numbers of test steps.
        """
        check_task_batch(support_x, support_y, query_x, query_y, batched=False)
        self._check_model_input(support_x)
        self._check_model_input(query_x)
        steps = self.eval_inner_steps
        report = check_report_steps(at_steps, steps)
        ks = sorted({*report, steps})
        with torch.no_grad():
            _, outs = self._run_task(self._model_params(), support_x, support_y, steps,
                                     first_order=True, track=False, queries=query_x, out_steps=ks)
        return step_metrics(dict(zip(ks, outs)), steps, report, query_y, self.loss_fn, self.loss_name)

    def extra_repr(self) -> str:
        parts = [f"inner_lr={self.inner_lr}", f"inner_steps={self.inner_steps}",
                 f"eval_inner_steps={self.eval_inner_steps}", f"first_order={self.first_order}",
                 f"loss={self.loss_name!r}", f"adapted={len(self.adapt_names)} tensors"]
        if self.learn_inner_lr:
            parts.append(f"learn_inner_lr={self.learn_inner_lr!r}")
        if self.multi_step_loss:
            parts.append(f"multi_step_loss over {self.msl_iterations} iterations")
        if self.per_step_bn:
            parts.append("per_step_bn=True")
        if self.first_order_until is not None:
            parts.append(f"first_order_until={self.first_order_until}")
        if self.head_init is not None:
            parts.append(f"head_init={self.head_init!r}")
        return ", ".join(parts)


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, sec. 5.2): the query gradient at the adapted params.

    Same arguments as :class:`MAML`; ``first_order`` is always ``True``.
    """

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1, **kwargs: object
    ) -> None:
        if kwargs.pop("first_order", True) is not True:
            raise ConfigError("FOMAML is first-order by definition; use MAML for first_order=False")
        super().__init__(model, inner_lr, inner_steps, first_order=True, **kwargs)  # type: ignore[arg-type]


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): MAML with a learned learning-rate tensor per parameter.

    Each adapted parameter gets a rate tensor of its own shape, initialised to ``inner_lr`` and
    meta-learned with the model (``algo.inner_lrs``). Finn et al.'s one-step setting is the
    default. Other arguments as :class:`MAML`.
    """

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1, **kwargs: object
    ) -> None:
        kwargs.setdefault("learn_inner_lr", "per_param")
        super().__init__(model, inner_lr, inner_steps, **kwargs)  # type: ignore[arg-type]


class ANIL(MAML):
    """ANIL, Almost No Inner Loop (Raghu et al. 2020): MAML adapting only the head.

    ``adapt`` defaults to ``r"^head\\."``; the trunk is meta-learned in the outer loop only, and
    its features are computed once per task. Other arguments as :class:`MAML`.
    """

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1, **kwargs: object
    ) -> None:
        kwargs.setdefault("adapt", r"^head\.")
        super().__init__(model, inner_lr, inner_steps, **kwargs)  # type: ignore[arg-type]


class MAMLPlusPlus(MAML):
    """MAML++ (Antoniou et al. 2019, "How to train your MAML") with all its inner-loop fixes on.

    Defaults: 5 inner steps, per-layer-per-step learned rates (LSLR), the multi-step loss (MSL)
    annealed over ``msl_iterations``, per-step BatchNorm weights, and first-order derivatives for
    the first ``first_order_until`` iterations (derivative-order annealing). The remaining
    MAML++ ingredient, cosine annealing of the outer learning rate, belongs to the outer
    optimiser. The iteration counts are defaults to adjust to the length of training. Every
    option can be switched off through the keyword arguments of :class:`MAML`.
    """

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.1, inner_steps: int = 5, *,
        msl_iterations: int = 10_000, first_order_until: int | None = 25_000, **kwargs: object,
    ) -> None:
        kwargs.setdefault("learn_inner_lr", "per_layer_per_step")
        kwargs.setdefault("multi_step_loss", True)
        kwargs.setdefault("per_step_bn", True)
        super().__init__(model, inner_lr, inner_steps, msl_iterations=msl_iterations,  # type: ignore[arg-type]
                         first_order_until=first_order_until, **kwargs)



class ProtoMAML(MAML):
    """Proto-MAML (Triantafillou et al. 2020, "Meta-Dataset"): MAML whose head starts, in every
    task, from the support set's class prototypes (``head_init="prototypes"``, see :class:`MAML`).

    Tested at any number of classes, like a Prototypical Network; adapted like MAML. Other
    arguments as :class:`MAML` (second order by default; ``first_order=True`` is fo-Proto-MAML).
    """

    def __init__(
        self, model: nn.Module, inner_lr: float = 0.4, inner_steps: int = 1, **kwargs: object
    ) -> None:
        kwargs.setdefault("head_init", "prototypes")
        super().__init__(model, inner_lr, inner_steps, **kwargs)  # type: ignore[arg-type]
