"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"), functional.

Reptile adapts a copy of the parameters by plain SGD on a task and then moves the
meta-parameters towards the adapted ones: ``theta <- theta + eps * mean_tasks(phi - theta)``.
To share one outer-optimiser loop with MAML, :meth:`Reptile.outer_loss` returns the surrogate
``mean_tasks 0.5 * ||theta - stopgrad(phi)||^2``, whose gradient is exactly
``mean_tasks(theta - phi)``: an outer ``SGD(lr=eps)`` step on it is the Reptile update, and any
other optimiser (Adam, as in the paper's experiments) treats it as the Reptile "gradient".
"""

from __future__ import annotations

from collections.abc import Sequence

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
    step_metrics,
)
from mtl.errors import ConfigError

__all__ = ["Reptile"]


class Reptile(nn.Module):
    """Reptile (Nichol et al. 2018): first-order meta-learning by moving towards adapted weights.

    Args:
        model: a registry backbone with a head (``track_running_stats=False`` recommended, as
            for :class:`~meta.maml.MAML`).
        inner_lr: step size of the inner plain-SGD loop (> 0). (The paper's inner optimiser is
            Adam with beta1=0; plain SGD keeps the adapted weights a pure function of theta.)
        inner_steps: inner SGD steps during meta-training (>= 1), full-batch on the task data.
        eval_inner_steps: inner steps at test time; default ``inner_steps`` (the paper used more).
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(outputs, targets) -> scalar``.
        train_on_query: meta-training inner loop on support + query together (the paper trains
            on all the examples sampled for a task; its few-shot runs sample more training shots
            than they test with). With the default ``False`` only the support set is used, and
            the query set only provides the reported metrics. With ``True`` the reported query
            metrics are on data the inner loop has seen.
        batched: ``True`` runs the (graph-free) inner loops of a batch through
            ``torch.func.vmap``; ``None``/``False`` loops over tasks (the default; faster on CPU).

    BatchNorm: every forward pass runs in train mode with batch statistics (MAML convention);
    running-statistics buffers, if any, are passed as throw-away clones and never updated.
    """

    def __init__(
        self,
        model: nn.Module,
        inner_lr: float = 0.1,
        inner_steps: int = 5,
        eval_inner_steps: int | None = None,
        loss: str | LossFn = "cross_entropy",
        train_on_query: bool = False,
        batched: bool | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not any(True for _ in model.parameters()):
            raise ConfigError(f"model {type(model).__name__} has no parameters to meta-learn")
        require_head(model, "Reptile")
        self.model = model
        self.inner_lr = check_positive_float("inner_lr", inner_lr)
        self.inner_steps = check_positive_int("inner_steps", inner_steps)
        self.eval_inner_steps = check_positive_int(
            "eval_inner_steps", inner_steps if eval_inner_steps is None else eval_inner_steps
        )
        self.loss_fn, self.loss_name = resolve_loss(loss)
        self.train_on_query = bool(train_on_query)
        if batched not in (None, True, False):
            raise ConfigError(f"batched must be None, True or False, got {batched!r}")
        if batched and has_running_stats(model):
            raise ConfigError("batched=True needs a model without BatchNorm running statistics "
                              "(build it with track_running_stats=False)")
        self.batched = batched

    def _model_params(self) -> ParamDict:
        return dict(self.model.named_parameters())

    def _model_buffers(self) -> ParamDict:
        return dict(self.model.named_buffers())

    def _adapt_params(self, params: ParamDict, x: Tensor, y: Tensor, steps: int) -> ParamDict:
        """Plain SGD on ``(x, y)`` from ``params``, without any outer graph."""
        return self._adapt_history(params, x, y, steps)[-1]

    def _adapt_history(self, params: ParamDict, x: Tensor, y: Tensor, steps: int) -> list[ParamDict]:
        """``params`` and the parameters after each of ``steps`` SGD steps on ``(x, y)``, no outer graph."""
        buffers = self._model_buffers()

        def step_loss(full: ParamDict, step: int) -> Tensor:
            return self.loss_fn(functional_forward(self.model, full, buffers, x), y)

        return inner_loop(step_loss, params, list(params), steps, lambda step, name: self.inner_lr, track=False)

    def adapt(self, support_x: Tensor, support_y: Tensor, *, steps: int | None = None) -> AdaptedPredictor:
        """SGD on one task's support set (no task dim); returns the adapted predictor (Nichol et al. 2018).

        ``steps`` defaults to ``inner_steps`` in train mode and ``eval_inner_steps`` in eval mode.
        The adapted parameters carry no graph; the model is not modified.
        """
        check_task_batch(support_x, support_y, batched=False)
        if steps is None:
            steps = self.inner_steps if self.training else self.eval_inner_steps
        steps = check_positive_int("steps", steps)
        phi = self._adapt_params(self._model_params(), support_x, support_y, steps)
        return AdaptedPredictor(self.model, phi, self._model_buffers())

    def _task(
        self, params: ParamDict, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
    ) -> tuple[ParamDict, Tensor, Tensor]:
        """Adapted params, query loss and query accuracy (0 for regression) of one task."""
        if self.train_on_query:
            x, y = torch.cat([sx, qx]), torch.cat([sy, qy])
        else:
            x, y = sx, sy
        phi = self._adapt_params(params, x, y, self.inner_steps)
        out = functional_forward(self.model, phi, self._model_buffers(), qx).detach()
        acc = classification_accuracy(out, qy)
        return phi, self.loss_fn(out, qy), (acc if acc is not None else out.new_zeros(()))

    def outer_loss(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        iteration: int | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Reptile surrogate ``mean_tasks 0.5 * ||theta - phi||^2`` (gradient ``theta - phi``).

        Inputs have a leading task dim. Metrics: ``loss``/``accuracy`` of the adapted params on
        the query sets, and ``surrogate``, the returned value (Nichol et al. 2018, Alg. 2 with
        the batch of tasks averaged). ``iteration`` is accepted for API symmetry and unused.
        """
        check_task_batch(support_x, support_y, query_x, query_y, batched=True)
        params = self._model_params()
        n_tasks = support_x.shape[0]
        if self.batched:
            detached = {k: v.detach() for k, v in params.items()}

            def one(sx1: Tensor, sy1: Tensor, qx1: Tensor, qy1: Tensor) -> tuple[ParamDict, Tensor, Tensor]:
                return self._task(detached, sx1, sy1, qx1, qy1)

            phis, losses, accs = vmap(one)(support_x, support_y, query_x, query_y)
            surrogate = sum(0.5 * (params[k].unsqueeze(0) - phis[k]).pow(2).sum() for k in params) / n_tasks
        else:
            terms, loss_list, acc_list = [], [], []
            for b in range(n_tasks):
                phi, lo, ac = self._task(params, support_x[b], support_y[b], query_x[b], query_y[b])
                terms.append(sum(0.5 * (params[k] - phi[k]).pow(2).sum() for k in params))
                loss_list.append(lo)
                acc_list.append(ac)
            surrogate = sum(terms) / n_tasks
            losses, accs = torch.stack(loss_list), torch.stack(acc_list)
        metrics = {"loss": as_float(losses.mean()), "surrogate": as_float(surrogate)}
        if not (query_y.is_floating_point() or query_y.is_complex()):
            metrics["accuracy"] = as_float(accs.mean())
        return surrogate, metrics  # type: ignore[return-value]

    def evaluate_task(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor, *,
        at_steps: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """``eval_inner_steps`` SGD steps on the support set, then query ``loss``/``accuracy``.

        One task, no task dim (Nichol et al. 2018 evaluation). ``mse`` is added for the mse loss.
        ``at_steps`` (each in ``1..eval_inner_steps``) adds the metrics after those steps of the
        same run, keyed ``"accuracy@5"`` etc.
        """
        check_task_batch(support_x, support_y, query_x, query_y, batched=False)
        steps = self.eval_inner_steps
        report = check_report_steps(at_steps, steps)
        buffers = self._model_buffers()
        with torch.no_grad():
            history = self._adapt_history(self._model_params(), support_x, support_y, steps)
            by_step = {k: functional_forward(self.model, history[k], buffers, query_x) for k in {*report, steps}}
        return step_metrics(by_step, steps, report, query_y, self.loss_fn, self.loss_name)

    def extra_repr(self) -> str:
        return (f"inner_lr={self.inner_lr}, inner_steps={self.inner_steps}, "
                f"eval_inner_steps={self.eval_inner_steps}, loss={self.loss_name!r}, "
                f"train_on_query={self.train_on_query}")
