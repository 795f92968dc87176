"""Loss balancers: weight the L = T + 1 losses of a step (T task losses plus the GFAE loss).

Every balancer is a small ``nn.Module`` with the same calls, so the train loop does not care
which one it holds::

    losses, output = model(batch)                    # losses: (L,), one per balanced loss
    logs = balancer.step(losses, shared_parameters)  # GradNorm updates its weights here
    balancer.combine(losses).backward()              # weighted total, scalar
    balancer.sync_gradients()                        # UncertaintyWeighting: average over ranks
    optimizer.step()                                 # the model's (and Uncertainty's) optimizer

=======================  ==========================  =====================================
balancer                 weights trained by          parameters go to
=======================  ==========================  =====================================
:class:`GradNorm`        its own optimizer in step   nowhere: it owns its optimizer
:class:`FixedWeights`    nothing (constants)         nothing
:class:`UncertaintyW..`  the main backward           the model's dense optimizer
=======================  ==========================  =====================================

Balancers live outside ``DistributedModelParallel``: DMP never sees their parameters, so they
average their own gradients across ranks (GradNorm inside :meth:`GradNorm.step`,
UncertaintyWeighting in :meth:`UncertaintyWeighting.sync_gradients`) and every rank keeps
identical weights. GradNorm's gradient norms need ``torch.autograd.grad`` before the backward;
under DMP that requires ``DefaultDataParallelWrapper(static_graph=False)`` (see
``shared/design/TORCHREC_FACTS.md``, "GradNorm under DMP").
"""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Type

import torch
import torch.distributed as dist
from torch import nn, Tensor
from torch.profiler import record_function

# GradNorm weights are clamped to this before renormalising, so none reaches 0 (a zero weight
# has a zero gradient norm and could never recover).
_MIN_WEIGHT = 1e-4


def _gradnorm_problems(alpha: float, lr: float, update_every: int) -> List[str]:
    """Every problem with GradNorm's hyper-parameters, shared by GradNorm and BalancerConfig."""
    problems = []
    if not alpha >= 0:
        problems.append(f"alpha must be >= 0, got {alpha}")
    if not lr > 0:
        problems.append(f"lr must be > 0, got {lr}")
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        problems.append(f"update_every must be an int >= 1, got {update_every!r}")
    return problems


@dataclass
class BalancerConfig:
    """The loss balancer of a job, with the package's defaults (the one place they live).

    Args:
        kind (str): ``"gradnorm"``, ``"fixed"`` or ``"uncertainty"``. Default ``"gradnorm"``.
        alpha (float): GradNorm asymmetry; 0 equalises gradient norms, larger values push
            harder towards tasks that train slower. Default 1.5 (the paper's value for
            multi-task regression; it reports 0.5 to 3 working).
        lr (float): learning rate of GradNorm's Adam on the weights. Default 0.025 (the value
            most public GradNorm implementations use).
        update_every (int): GradNorm updates its weights every ``update_every`` steps and
            keeps them constant in between. Default 4: on the default synthetic data the final
            task weights and the validation AUC of every-step updates (3 seeds each,
            docs/RESULTS.md "Step cost") at a quarter of GradNorm's cost.
        weights (List[float], optional): the constant weights of ``kind="fixed"`` (one per
            loss); ``None`` means all ones. Only valid with ``kind="fixed"``.

    Example::

        config = BalancerConfig(kind="gradnorm", alpha=1.0)
        balancer = config.build(num_losses=3)
    """

    kind: str = "gradnorm"
    alpha: float = 1.5
    lr: float = 0.025
    update_every: int = 4
    weights: Optional[List[float]] = None

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in _BALANCERS:
            problems.append(f"kind must be one of {sorted(_BALANCERS)}, got {self.kind!r}")
        if self.weights is not None and self.kind != "fixed":
            problems.append(f"weights is only used by kind='fixed', got kind={self.kind!r}")
        problems += _gradnorm_problems(self.alpha, self.lr, self.update_every)
        if problems:
            raise ValueError(f"BalancerConfig: {len(problems)} problem(s): " + "; ".join(problems))

    def build(self, num_losses: int) -> "LossBalancer":
        """Build the configured balancer for ``num_losses`` losses.

        Args:
            num_losses (int): L, the number of balanced losses (T tasks + GFAE).

        Returns:
            LossBalancer: a :class:`GradNorm`, :class:`FixedWeights` or
            :class:`UncertaintyWeighting`.
        """
        kwargs: Dict[str, Any] = {
            "gradnorm": {"alpha": self.alpha, "lr": self.lr, "update_every": self.update_every},
            "fixed": {"weights": self.weights},
            "uncertainty": {},
        }[self.kind]
        return build_balancer(self.kind, num_losses, **kwargs)


class LossBalancer(nn.Module, abc.ABC):
    """Base of the loss balancers: turns the (L,) losses of a step into one weighted total.

    Subclasses define :meth:`weights`; :meth:`combine`, :meth:`step` and
    :meth:`sync_gradients` have defaults that fit constant weights.

    Args:
        num_losses (int): L, the number of balanced losses (T task losses + the GFAE loss).

    Example::

        balancer: LossBalancer = build_balancer("fixed", num_losses=2, weights=[1.0, 0.5])
        losses = torch.stack([click_loss, gfae_loss])  # (2,)
        balancer.step(losses)
        balancer.combine(losses).backward()
    """

    def __init__(self, num_losses: int) -> None:
        super().__init__()
        if isinstance(num_losses, bool) or not isinstance(num_losses, int) or num_losses < 1:
            raise ValueError(
                f"{type(self).__name__}: num_losses must be an int >= 1, got {num_losses!r}"
            )
        self.num_losses = num_losses

    @abc.abstractmethod
    def weights(self) -> Tensor:
        """The current loss weights.

        Returns:
            Tensor: (L,) weights, detached from autograd (a copy: later updates leave it as is).
        """

    def combine(self, losses: Tensor) -> Tensor:
        """The weighted total to backpropagate: ``sum_i w_i * L_i`` with detached weights.

        Args:
            losses (Tensor): (L,) the losses of the step.

        Returns:
            Tensor: () scalar total.
        """
        self._check_losses(losses)
        return (self.weights().to(losses) * losses).sum()

    def step(
        self, losses: Tensor, shared_parameters: Optional[Iterable[Tensor]] = None
    ) -> Dict[str, float]:
        """Update the weights from this step's losses; call it before the backward.

        The default keeps the weights as they are.

        Args:
            losses (Tensor): (L,) the losses of the step, still attached to the graph.
            shared_parameters (Iterable[Tensor], optional): parameters every loss reaches
                (unused here; see :class:`GradNorm`).

        Returns:
            Dict[str, float]: logging values, ``weight_{i}`` for every loss i.
        """
        self._check_losses(losses)
        return self._weight_logs()

    def backward_parameters(self) -> List[nn.Parameter]:
        """Parameters learned through the main backward of :meth:`combine`: give them to the
        model's optimizer. None by default (GradNorm updates its weights itself in :meth:`step`)."""
        return []

    def sync_gradients(self) -> None:
        """Average the balancer's parameter gradients across ranks; call it after backward.

        A no-op by default: constant weights have nothing to average and GradNorm averages
        inside :meth:`GradNorm.step`.
        """

    def _check_losses(self, losses: Tensor) -> None:
        if not isinstance(losses, Tensor) or losses.dim() != 1 or losses.shape[0] != self.num_losses:
            found = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"{type(self).__name__}: expected losses of shape ({self.num_losses},), "
                f"one per balanced loss (stack them with torch.stack), got {found}"
            )

    def _weight_logs(self) -> Dict[str, float]:
        return {f"weight_{i}": w for i, w in enumerate(self.weights().tolist())}

    def _average_across_ranks(self, tensor: Tensor) -> None:
        """Average ``tensor`` in place over all ranks when torch.distributed runs on several."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(tensor)  # SUM then divide: gloo has no ReduceOp.AVG
            tensor.div_(dist.get_world_size())


class FixedWeights(LossBalancer):
    """Constant loss weights, for ablations and as the plain-sum baseline.

    Args:
        num_losses (int): L, the number of balanced losses.
        weights (Sequence[float], optional): (L,) finite, non-negative weights. Default all
            ones (the plain sum TorchRec's pipeline would backpropagate).

    Example::

        balancer = FixedWeights(3, weights=[1.0, 0.5, 0.1])
        total = balancer.combine(torch.tensor([0.7, 0.2, 1.3]))  # 0.93
    """

    def __init__(self, num_losses: int, weights: Optional[Sequence[float]] = None) -> None:
        super().__init__(num_losses)
        values = torch.ones(num_losses) if weights is None else torch.tensor(list(weights), dtype=torch.float)
        if values.shape != (num_losses,):
            raise ValueError(
                f"FixedWeights: expected {num_losses} weights (one per loss), got {len(values)}"
            )
        if not (torch.isfinite(values).all() and (values >= 0).all()):
            raise ValueError(f"FixedWeights: weights must be finite and >= 0, got {values.tolist()}")
        # Not persistent: the weights come from the config, a checkpoint must not override them.
        self.register_buffer("loss_weights", values, persistent=False)

    def weights(self) -> Tensor:
        """The constant weights.

        Returns:
            Tensor: (L,) weights.
        """
        return self.loss_weights.clone()

    def extra_repr(self) -> str:
        return f"num_losses={self.num_losses}, weights={self.loss_weights.tolist()}"


class UncertaintyWeighting(LossBalancer):
    """Homoscedastic-uncertainty weighting (`Kendall et al. 2018 <https://arxiv.org/abs/1705.07115>`_).

    Learns one log-variance ``s_i`` per loss and backpropagates::

        total = sum_i exp(-s_i) * L_i + s_i

    the paper's classification form, used for every loss (its regression form
    ``0.5 * exp(-s_i) * L_i + 0.5 * s_i`` is the same objective scaled by 1/2 with the same
    minimiser ``s_i = log L_i``). ``s`` starts at 0 (weights 1) and is trained by the main
    backward: :meth:`combine` keeps it attached, so give :meth:`parameters` to the model's
    dense optimizer and call :meth:`sync_gradients` after the backward when training on
    several ranks.

    Args:
        num_losses (int): L, the number of balanced losses.

    Example::

        balancer = UncertaintyWeighting(3)
        optimizer = torch.optim.Adam([*model.parameters(), *balancer.parameters()])
        balancer.combine(losses).backward()
        balancer.sync_gradients()
        optimizer.step()
    """

    def __init__(self, num_losses: int) -> None:
        super().__init__(num_losses)
        self.log_vars = nn.Parameter(torch.zeros(num_losses))

    def weights(self) -> Tensor:
        """The current weights ``exp(-s)``.

        Returns:
            Tensor: (L,) weights, detached.
        """
        return torch.exp(-self.log_vars.detach())

    def combine(self, losses: Tensor) -> Tensor:
        """``sum_i exp(-s_i) * L_i + s_i``, differentiable w.r.t. the losses and ``s``.

        Args:
            losses (Tensor): (L,) the losses of the step.

        Returns:
            Tensor: () scalar total.
        """
        self._check_losses(losses)
        log_vars = self.log_vars.to(losses.dtype)
        return (torch.exp(-log_vars) * losses + log_vars).sum()

    def backward_parameters(self) -> List[nn.Parameter]:
        """The log-variances ``s``, learned through the main backward."""
        return [self.log_vars]

    def sync_gradients(self) -> None:
        """Average the gradient of ``s`` across ranks (the parameters live outside DMP/DDP).

        Call it after the backward and before the optimizer step. A rank whose ``s`` got no
        gradient contributes zeros, so the collective never hangs.
        """
        if self.log_vars.grad is None:
            self.log_vars.grad = torch.zeros_like(self.log_vars)
        self._average_across_ranks(self.log_vars.grad)

    def extra_repr(self) -> str:
        return f"num_losses={self.num_losses}"


class GradNorm(LossBalancer):
    """GradNorm loss balancing (`Chen et al. 2018 <https://arxiv.org/abs/1711.02257>`_).

    Learns weights ``w`` (L,), initialised to 1, so that the gradient norm of every weighted
    loss on a shared layer ``W`` follows its relative training rate. At an update step t::

        G_i   = || d(w_i L_i) / dW ||_2 = w_i * || dL_i / dW ||_2   (w_i > 0)
        G_bar = mean_i G_i                                          over the losses taking part
        r_i   = (L_i(t) / L_i(0)) / mean_j (L_j(t) / L_j(0))       inverse training rate
        L_grad = sum_i | G_i - G_bar * r_i ** alpha |              target held constant
        w <- optimizer step on dL_grad/dw, then clamp to >= 1e-4 and rescale to sum to L

    All ``||dL_i/dW||`` come from one vectorised backward (``torch.autograd.grad`` of the
    (L,) losses with the identity as ``grad_outputs`` and ``is_grads_batched=True``), without
    ``create_graph``: since ``G_i = w_i * ||dL_i/dW||`` exactly, the gradient w.r.t. ``w``
    needs no double backward. It runs only the part of the graph between the losses and ``W``
    (heads and fusion when ``W`` is the last GNN layer), for the L losses at once. :meth:`combine` uses the weights detached, so the main
    backward never reaches them; GradNorm owns its optimizer (do not give :meth:`parameters`
    to the model's optimizer).

    Losses that do not take part in an update: ``G_i`` and ``r_i`` are 0 and left out of both
    means, and ``w_i`` keeps its value through the optimizer step (Adam's momentum does not
    move it) unless the loss took part on another rank; the renormalisation still rescales it.
    They are:

    - a loss with no gradient on ``W`` (the stacked losses do not require grad, the loss is
      disconnected from ``W``, or its gradient is exactly zero), e.g. a task whose labels are
      all missing in the batch and which returns a constant 0;
    - a non-finite loss or gradient norm;
    - a loss without a recorded initial value: ``L_i(0)`` is the first finite, strictly
      positive value loss i takes (usually at the first step). A loss that is 0 or non-finite
      at the first step waits until it is positive, so no ratio ever divides by 0.

    On several ranks (torch.distributed initialised, world size > 1) the loss values that set
    ``L_i(0)`` and the rates are averaged over the ranks first (the step's global loss, one
    all-reduce of L numbers), every rank computes ``dL_grad/dw`` from its own gradient norms
    and these gradients are averaged before the optimizer step: weights, ``L_i(0)`` and the
    optimizer state stay identical on all ranks, so one rank's state dict restores them all
    (exact resume). Every rank must call :meth:`step` the same number of times.

    Args:
        num_losses (int): L, the number of balanced losses (T task losses + the GFAE loss).
        alpha (float): asymmetry, >= 0. Default 1.5.
        lr (float): learning rate of the weights' optimizer, > 0. Default 0.025.
        update_every (int): update the weights every ``update_every`` calls of :meth:`step`
            (the first call always updates) and keep them constant in between. Default 1.
        optimizer_cls (Type[torch.optim.Optimizer]): optimizer of the weights, built as
            ``optimizer_cls([w], lr=lr)``. Default ``torch.optim.Adam``.

    Example::

        balancer = GradNorm(num_losses=3, alpha=1.5)
        losses, output = model(batch)                    # (3,)
        balancer.step(losses, model.tower.convs[-1].parameters())
        balancer.combine(losses).backward()
        optimizer.step()
    """

    def __init__(
        self,
        num_losses: int,
        alpha: float = BalancerConfig.alpha,
        lr: float = BalancerConfig.lr,
        update_every: int = 1,
        optimizer_cls: Type[torch.optim.Optimizer] = torch.optim.Adam,
    ) -> None:
        super().__init__(num_losses)
        problems = _gradnorm_problems(alpha, lr, update_every)
        if problems:
            raise ValueError("GradNorm: " + "; ".join(problems))
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.update_every = update_every
        self.loss_weights = nn.Parameter(torch.ones(num_losses))
        self.register_buffer("initial_losses", torch.zeros(num_losses))
        self.register_buffer("has_initial_loss", torch.zeros(num_losses, dtype=torch.bool))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self.optimizer: torch.optim.Optimizer = optimizer_cls([self.loss_weights], lr=self.lr)

    def weights(self) -> Tensor:
        """The current GradNorm weights (positive, summing to L).

        Returns:
            Tensor: (L,) weights, detached.
        """
        return self.loss_weights.detach().clone()

    def step(
        self, losses: Tensor, shared_parameters: Optional[Iterable[Tensor]] = None
    ) -> Dict[str, float]:
        """Record initial losses and, on update steps, take one GradNorm step on the weights.

        Call it after the forward and before ``combine(losses).backward()``; the graph is
        retained for that backward.

        Args:
            losses (Tensor): (L,) the losses of the step, attached to the graph (e.g. the
                ``torch.stack`` of the per-task losses and the GFAE loss).
            shared_parameters (Iterable[Tensor]): parameters of a layer every balanced loss
                reaches, e.g. the last GNN layer. Required on update steps. Never pass a
                fused embedding table (its backward applies the update).

        Returns:
            Dict[str, float]: ``weight_{i}`` (after the update) on every step; on update steps
            also ``grad_norm_{i}`` (G_i before the update), ``inverse_rate_{i}`` (r_i),
            ``grad_loss`` (L_grad) and ``active_losses`` (how many losses took part).
        """
        self._check_losses(losses)
        update = int(self.num_steps) % self.update_every == 0
        self.num_steps += 1
        values = losses.detach().to(self.initial_losses.dtype).clone()
        if update or not bool(self.has_initial_loss.all()):
            # The step's loss over all ranks, as DDP's averaged gradient sees it: L_i(0) and the
            # rates are then the same on every rank, so rank 0's checkpoint restores them all.
            self._average_across_ranks(values)
        # First finite, positive value of each loss becomes its L_i(0).
        first = ~self.has_initial_loss & torch.isfinite(values) & (values > 0)
        self.initial_losses.copy_(torch.where(first, values, self.initial_losses))
        self.has_initial_loss |= first
        if not update:
            return self._weight_logs()
        params = self._check_shared_parameters(shared_parameters)
        with record_function("## gradnorm ##"):
            return self._update(losses, values, params)

    def _update(self, losses: Tensor, values: Tensor, params: List[Tensor]) -> Dict[str, float]:
        norms = self._grad_norms(losses, params)  # (L,) ||dL_i/dW||
        active = (norms > 0) & torch.isfinite(norms) & torch.isfinite(values) & self.has_initial_loss
        count = active.sum().clamp(min=1)
        grad_norms = self.loss_weights * torch.where(active, norms, 0)  # (L,) G_i, grad to w
        mean_norm = grad_norms.detach().sum() / count  # G_bar over the active losses
        ratios = torch.where(active, values / torch.where(active, self.initial_losses, 1), 0)
        inverse_rates = ratios / (ratios.sum() / count).clamp(min=torch.finfo(ratios.dtype).tiny)
        targets = torch.where(active, mean_norm * inverse_rates.pow(self.alpha), 0)  # constant
        grad_loss = (grad_norms - targets).abs().sum()
        (weight_grad,) = torch.autograd.grad(grad_loss, self.loss_weights)
        # One all-reduce for the gradient and the activity, so every rank takes the same step.
        synced = torch.cat([weight_grad, active.to(weight_grad.dtype)])  # (2 * L,)
        self._average_across_ranks(synced)
        took_part = synced[self.num_losses :] > 0  # (L,) active on at least one rank
        before = self.loss_weights.detach().clone()
        self.loss_weights.grad = synced[: self.num_losses]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            # Momentum must not move the weight of a loss that took no part in this update.
            weights = torch.where(took_part, self.loss_weights, before).clamp(min=_MIN_WEIGHT)
            self.loss_weights.copy_(weights * (self.num_losses / weights.sum()))
        # One device->host copy for all logging values (a sync point on GPU).
        logged = torch.cat(
            [self.loss_weights.detach(), grad_norms.detach(), inverse_rates,
             torch.stack([grad_loss.detach(), active.sum().to(grad_loss.dtype)])]
        ).tolist()
        n = self.num_losses
        logs = {"grad_loss": logged[3 * n], "active_losses": logged[3 * n + 1]}
        for i in range(n):
            logs[f"weight_{i}"] = logged[i]
            logs[f"grad_norm_{i}"] = logged[n + i]
            logs[f"inverse_rate_{i}"] = logged[2 * n + i]
        return logs

    def _grad_norms(self, losses: Tensor, params: List[Tensor]) -> Tensor:
        """(L,) ``||dL_i/dW||_2`` over all shared parameters; 0 where L_i does not reach W."""
        norms = torch.zeros(self.num_losses, device=self.loss_weights.device, dtype=self.loss_weights.dtype)
        if not losses.requires_grad:
            return norms
        one_hot = torch.eye(self.num_losses, device=losses.device, dtype=losses.dtype)  # row i selects L_i
        grads = torch.autograd.grad(losses, params, grad_outputs=one_hot, retain_graph=True, allow_unused=True,
                                    is_grads_batched=True)  # each (L, *W.shape)
        for g in grads:
            if g is not None:
                norms += g.detach().flatten(1).pow(2).sum(1).to(norms.dtype)
        return norms.sqrt()

    def _check_shared_parameters(self, shared_parameters: Optional[Iterable[Tensor]]) -> List[Tensor]:
        params = [] if shared_parameters is None else list(shared_parameters)
        if not params:
            raise ValueError(
                "GradNorm: step() needs shared_parameters on update steps (the parameters of a "
                "layer every loss reaches, e.g. the last GNN layer), got none"
            )
        frozen = [tuple(p.shape) for p in params if not p.requires_grad]
        if frozen:
            raise ValueError(
                f"GradNorm: shared_parameters must require grad, got frozen tensors of shapes {frozen}"
            )
        return params

    def get_extra_state(self) -> Dict[str, Any]:
        """The optimizer state, saved in :meth:`state_dict` next to weights and buffers."""
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        """Restore the optimizer state saved by :meth:`get_extra_state`."""
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return (
            f"num_losses={self.num_losses}, alpha={self.alpha}, lr={self.lr}, "
            f"update_every={self.update_every}, optimizer={type(self.optimizer).__name__}"
        )


_BALANCERS: Dict[str, Type[LossBalancer]] = {
    "gradnorm": GradNorm,
    "fixed": FixedWeights,
    "uncertainty": UncertaintyWeighting,
}


def build_balancer(kind: str, num_losses: int, **kwargs: Any) -> LossBalancer:
    """Build a loss balancer by name.

    Args:
        kind (str): ``"gradnorm"``, ``"fixed"`` or ``"uncertainty"``.
        num_losses (int): L, the number of balanced losses (T task losses + the GFAE loss).
        **kwargs: the balancer's other constructor arguments (e.g. ``alpha`` for GradNorm,
            ``weights`` for FixedWeights).

    Returns:
        LossBalancer: the balancer.

    Example::

        balancer = build_balancer("gradnorm", num_losses=3, alpha=1.0)
    """
    if kind not in _BALANCERS:
        raise ValueError(f"build_balancer: unknown kind {kind!r}; valid kinds: {sorted(_BALANCERS)}")
    cls = _BALANCERS[kind]
    valid = [name for name in inspect.signature(cls).parameters if name != "num_losses"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"build_balancer: kind {kind!r} got unknown argument(s) {unknown}; valid: {valid}"
        )
    return cls(num_losses, **kwargs)
