"""``distill``: recover a pruned student's accuracy from the unpruned teacher.

The student (an exported subnet, or the converted model with a subnet selected) is trained **in
place** on ``data_loader`` with :class:`~nasviz.recover.loss.KDLoss` against the teacher's
logits and, with ``features=``, the MSE between its intermediate outputs and the teacher's outputs
of the same modules restricted to the channels it kept (:mod:`nasviz.recover.channels`).

**The teacher is not touched:** it runs in eval mode under ``torch.no_grad()``; a converted
teacher runs at full width; its train/eval flag and its selected subnet are put back when the run
ends (also on an exception).

**Events, not prints:** every step emits a :class:`~nasviz.recover.events.DistillStep` and every
epoch a :class:`~nasviz.recover.events.DistillEpoch` to the ``callbacks`` (the same
:class:`~nasviz.search.events.EventBus` as a search); :attr:`DistillResult.history` is the table.

**Stop and resume:** :meth:`Distiller.stop` (the recovery widget's Stop button, or any thread)
sets a flag checked between steps; :meth:`Distiller.run` called again continues from the same
batch iterator, optimizer state and schedule.

**Ctrl-C:** a step is all or nothing. An interrupt during the forward or backward pass restores
the student's buffers (BatchNorm statistics) and drops the gradients; one during the optimizer
update is held until the update is complete. The student therefore holds the weights of the last
completed step, and the distiller can resume (the interrupted batch is skipped).

Example::

    >>> result = nv.distill(nv.export(model), teacher, loaders.train, epochs=3,
    ...                     score_loader=loaders.val, metric="accuracy", features="auto")
    >>> result.history[["epoch", "step", "loss", "score"]].tail(1)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
from torch import nn

from nasviz._utils import device_of, signature_of
from nasviz.errors import NasvizError
from nasviz.extension import ActivationMapGrabber
from nasviz.recover.channels import KeptMap, kept_channels
from nasviz.recover.events import (
    DistillEpoch,
    DistillFinished,
    DistillStarted,
    DistillStep,
    DistillStopped,
)
from nasviz.recover.loss import KDLoss, feature_loss
from nasviz.recover.result import (
    DistillResult,
    Metric,
    call,
    logits_of,
    resolve_metric,
    sigint_held,
    split_batch,
    to_device,
)
from nasviz.search.events import EventBus, SearchEvent, SearchHistory
from nasviz.space import get_subnet_config, sample, select

__all__ = ["DistillResult", "Distiller", "distill"]


class Distiller:
    """A resumable distillation run (see the module docstring); :func:`distill` runs one.

    Example::

        >>> d = Distiller(student, teacher, loaders.train, epochs=3)
        >>> threading.Thread(target=d.run).start(); d.stop()     # e.g. from a Stop button
        >>> result = d.run()                                     # resume to the end
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        data_loader: Iterable[Any],
        *,
        epochs: int,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        temperature: float = 4.0,
        alpha: float = 0.9,
        features: Sequence[str] | Literal["auto"] | None = None,
        feature_weight: float = 1.0,
        score_loader: Iterable[Any] | None = None,
        metric: str | Metric | None = None,
        callbacks: Sequence[Callable[[SearchEvent], None]] | None = None,
        schedule: Literal["constant", "cosine"] = "constant",
    ) -> None:
        for role, m in (("student", student), ("teacher", teacher)):
            if not isinstance(m, nn.Module):
                msg = f"distill: {role} must be an nn.Module, got {type(m).__name__}"
                raise NasvizError(msg)
        if student is teacher:
            msg = (
                "distill: student and teacher are the same object; the teacher is the unpruned "
                "model: keep a copy (copy.deepcopy) before pruning"
            )
            raise NasvizError(msg)
        shared = {id(p) for p in student.parameters()} & {id(p) for p in teacher.parameters()}
        if shared:
            msg = (
                f"distill: student and teacher share {len(shared)} parameter tensor(s), so "
                "training the student would change the teacher; pass a copy (copy.deepcopy)"
            )
            raise NasvizError(msg)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            msg = f"distill: epochs={epochs!r} must be an integer >= 1"
            raise NasvizError(msg)
        if not isinstance(data_loader, Iterable):
            msg = (
                f"distill: data_loader must be an iterable of batches, got "
                f"{type(data_loader).__name__}"
            )
            raise NasvizError(msg)
        if isinstance(feature_weight, bool) or not feature_weight >= 0:
            msg = f"distill: feature_weight={feature_weight!r} must be >= 0"
            raise NasvizError(msg)
        if schedule not in ("constant", "cosine"):
            msg = f"distill: schedule={schedule!r} is not 'constant' or 'cosine'"
            raise NasvizError(msg)
        self.student, self.teacher, self.data_loader = student, teacher, data_loader
        self.epochs, self.score_loader = epochs, score_loader
        self.metric = resolve_metric(metric, score_loader)
        self.loss = KDLoss(temperature, alpha)
        self.feature_weight = float(feature_weight)
        self.kept: KeptMap = {} if features is None else kept_channels(student, teacher, features)
        self.optimizer = self._optimizer(optimizer, lr)
        self.scheduler: Any = None
        if schedule == "cosine":
            if not isinstance(data_loader, Sized):
                msg = "distill: schedule='cosine' needs a data_loader with a len()"
                raise NasvizError(msg)
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=max(1, epochs * len(data_loader))
            )
        self.bus = EventBus()
        self.events = SearchHistory()
        self.bus.subscribe(self.events)
        for cb in callbacks or []:
            if not callable(cb):
                msg = f"distill: callbacks must be callables, got {cb!r}"
                raise NasvizError(msg)
            self.bus.subscribe(cb)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._iter: Iterator[Any] | None = None
        self._epoch = 0  # finished epochs
        self._step = 0  # finished steps
        self._epoch_losses: list[float] = []
        self._scores: tuple[float | None, float | None] | None = None
        self._seconds = 0.0

    def _optimizer(self, optimizer: torch.optim.Optimizer | None, lr: float) -> Any:
        params = [p for p in self.student.parameters() if p.requires_grad]
        if not params:
            msg = "distill: the student has no trainable parameters"
            raise NasvizError(msg)
        if optimizer is None:
            if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
                msg = f"distill: lr={lr!r} must be a positive number (e.g. 1e-3)"
                raise NasvizError(msg)
            return torch.optim.Adam(params, lr=lr)
        if not isinstance(optimizer, torch.optim.Optimizer):
            msg = f"distill: optimizer must be a torch optimizer, got {optimizer!r}"
            raise NasvizError(msg)
        mine = {id(p) for p in self.student.parameters()}
        foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in mine]
        if foreign:
            msg = (
                f"distill: the optimizer holds {len(foreign)} tensor(s) that are not parameters "
                "of the student; build it over student.parameters() (after nv.export)"
            )
            raise NasvizError(msg)
        return optimizer

    # -- control ---------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether all ``epochs`` epochs have finished (a stopped run is not done)."""
        return self._epoch >= self.epochs

    @property
    def step(self) -> int:
        """Optimizer steps finished so far, counted across epochs and resumed runs."""
        return self._step

    def stop(self) -> None:
        """Ask the run to stop before its next step (thread-safe; ``run()`` resumes)."""
        self._stop.set()

    def result(self) -> DistillResult:
        """The run so far as a :class:`DistillResult`: the student (trained in place), a copy of
        the events, and whether it is done (also usable after a stop).
        """
        return DistillResult(self.student, SearchHistory(list(self.events.events)), self.done)

    # -- the run ---------------------------------------------------------------------------------
    @contextmanager
    def _teacher_ready(self) -> Iterator[None]:
        was_training, saved = self.teacher.training, None
        try:
            saved = get_subnet_config(self.teacher)
        except NasvizError:
            saved = None  # a plain (exported or original) teacher
        try:
            if saved is not None:
                sample(self.teacher, "max")
            self.teacher.eval()
            yield
        finally:
            self.teacher.train(was_training)
            if saved is not None:
                select(self.teacher, saved)

    @torch.no_grad()
    def score_of(self, model: nn.Module) -> float | None:
        """The metric of ``model`` over ``score_loader`` in eval mode (``None`` without one)."""
        if self.metric is None or self.score_loader is None:
            return None
        device, was_training = device_of(model), model.training
        outs, targets = [], []
        model.eval()
        try:
            for batch in self.score_loader:
                x, y = split_batch(batch)
                outs.append(logits_of(call(model, to_device(x, device)), "model").float())
                targets.append(y)
        finally:
            model.train(was_training)
        labels = [t for t in targets if t is not None]
        if not outs or len(labels) != len(outs):
            msg = "distill: score_loader must yield (inputs, targets) batches"
            raise NasvizError(msg)
        return float(self.metric(torch.cat(outs), torch.cat([t.to(device) for t in labels])))

    def run(self) -> DistillResult:
        """Run (or resume) until every epoch is done or :meth:`stop` is called."""
        if not self._lock.acquire(blocking=False):
            msg = "distill: this run is already running (in another thread)"
            raise NasvizError(msg)
        self._stop.clear()
        t0 = time.perf_counter()
        try:
            with self._teacher_ready(), ExitStack() as stack:
                if self._scores is None:
                    self._scores = (self.score_of(self.teacher), self.score_of(self.student))
                self.bus.emit(
                    DistillStarted(
                        self.epochs,
                        len(self.data_loader) if isinstance(self.data_loader, Sized) else None,
                        *self._scores,
                        features=list(self.kept),
                        step=self._step,
                        resumed=self._step > 0 or self._epoch > 0,
                    )
                )
                grab_s = grab_t = None
                if self.kept:
                    grab_s = stack.enter_context(ActivationMapGrabber(self.student, self.kept))
                    grab_t = stack.enter_context(ActivationMapGrabber(self.teacher, self.kept))
                was_training = self.student.training
                stack.callback(self.student.train, was_training)
                self._loop(grab_s, grab_t)
        except BaseException as e:
            self._seconds += time.perf_counter() - t0
            self.bus.emit(
                DistillStopped(self._epoch + 1, self._step, f"{type(e).__name__}: {e}".rstrip(": "))
            )
            raise
        finally:
            self._lock.release()
        self._seconds += time.perf_counter() - t0
        if self.done:
            self.bus.emit(
                DistillFinished(self._epoch, self._step, self.result().score, self._seconds)
            )
        else:
            self.bus.emit(DistillStopped(self._epoch + 1, self._step, "stop requested"))
        return self.result()

    def _loop(
        self, grab_s: ActivationMapGrabber | None, grab_t: ActivationMapGrabber | None
    ) -> None:
        while not self.done:
            if self._stop.is_set():
                return
            if self._iter is None:
                self._iter = iter(self.data_loader)
                self._epoch_losses = []
            try:
                batch = next(self._iter)
            except StopIteration:
                self._end_epoch()
                continue
            self._one_step(batch, grab_s, grab_t)

    def _end_epoch(self) -> None:
        if not self._epoch_losses:
            msg = "distill: data_loader yielded no batches"
            raise NasvizError(msg)
        score = self.score_of(self.student)
        self._epoch += 1
        self._iter = None
        mean = sum(self._epoch_losses) / len(self._epoch_losses)
        self.bus.emit(DistillEpoch(self._epoch, self._step, mean, score))

    def _one_step(
        self, batch: Any, grab_s: ActivationMapGrabber | None, grab_t: ActivationMapGrabber | None
    ) -> None:
        student, teacher = self.student, self.teacher
        x, y = split_batch(batch)
        s_dev, t_dev = device_of(student), device_of(teacher)
        buffers = [(b, b.detach().clone()) for b in student.buffers()]
        try:
            with torch.no_grad():
                xt = to_device(x, t_dev)
                t_out, t_feats = call(grab_t, xt) if grab_t is not None else (call(teacher, xt), {})
            student.train()
            xs = to_device(x, s_dev)
            s_out, s_feats = call(grab_s, xs) if grab_s is not None else (call(student, xs), {})
            t_logits = logits_of(t_out, "teacher").to(s_dev)
            target = None if y is None else y.to(s_dev)
            loss, kd, ce = self.loss.terms(logits_of(s_out, "student"), t_logits, target)
            feat = torch.zeros((), device=s_dev)
            if self.kept:
                feat = feature_loss(
                    s_feats, {k: v.to(s_dev) for k, v in t_feats.items()}, self.kept
                )
                loss = loss + self.feature_weight * feat
            if not torch.isfinite(loss):
                msg = (
                    f"distill: the loss is {float(loss.detach())} at step {self._step + 1}; the "
                    "student keeps the weights of the last finite step; lower lr"
                )
                raise NasvizError(msg)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        except BaseException:
            with torch.no_grad():
                for live, saved in buffers:
                    live.copy_(saved)
            self.optimizer.zero_grad(set_to_none=True)
            raise
        lr = float(self.optimizer.param_groups[0]["lr"])
        with sigint_held():
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self._step += 1
        self._epoch_losses.append(float(loss.detach()))
        self.bus.emit(
            DistillStep(
                self._epoch + 1,
                self._step,
                float(loss.detach()),
                float(kd.detach()),
                float("nan") if ce is None else float(ce.detach()),
                float(feat.detach()),
                lr,
            )
        )


@signature_of(Distiller)
def distill(*args: Any, **kwargs: Any) -> DistillResult:
    """Distil ``teacher`` into ``student`` (trained in place) for ``epochs``; see the module
    docstring. Returns a :class:`DistillResult` (``.model``, ``.history``).

    Takes the parameters of :class:`Distiller` (``student, teacher, data_loader, *, epochs, ...``).
    ``features``: ``None`` (logits only), ``"auto"`` or module names matched through the kept
    channels, weighted by ``feature_weight``. ``optimizer`` defaults to Adam(``lr``) over the
    student's parameters; ``schedule="cosine"`` anneals its rate to 0 over the run.
    """
    return Distiller(*args, **kwargs).run()
