"""Distillation losses: logits (:class:`KDLoss`) and features through kept channels.

**Logits.** Hinton et al.'s knowledge distillation: the student matches the teacher's softened
class distribution, blended with the ordinary cross-entropy on the hard labels::

    loss = alpha * T**2 * KL(softmax(teacher / T) || softmax(student / T))
         + (1 - alpha) * cross_entropy(student, labels)

The ``T**2`` keeps the gradient scale of the soft term independent of ``T``. The KL divergence is
averaged over the rows of the logits (``"batchmean"``); logits of any shape ``(..., classes)``
(e.g. a language model's ``(N, L, V)``) are flattened to rows first. Without labels the soft term
is the whole loss.

**Features.** :func:`feature_loss` is the mean squared error between a student's feature map and
the teacher's feature map restricted to the channels the student kept (see
:mod:`nasviz.recover.channels`), averaged over the matched modules.

Example::

    >>> loss = KDLoss(temperature=4.0, alpha=0.9)
    >>> s, t, y = torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1])
    >>> round(float(loss(s, t, y)), 4)   # equal logits: only the hard term, 0.1 * ln 3
    0.1099
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from typing_extensions import override

from nasviz.errors import NasvizError

__all__ = ["KDLoss", "feature_loss"]


class KDLoss(nn.Module):
    """Temperature-scaled KL divergence to the teacher, blended with hard-label cross-entropy.

    Args:
        temperature: ``T > 0``; larger values soften both distributions.
        alpha: weight of the soft (teacher) term in ``[0, 1]``; ``1 - alpha`` weighs the hard
            labels.

    ``forward(student_logits, teacher_logits, target=None)`` returns the scalar loss;
    :meth:`terms` returns ``(loss, kd, ce)`` with the two unweighted terms (``ce`` is ``None``
    without a target).

    Example::

        >>> KDLoss(temperature=2.0)(torch.randn(4, 10), torch.randn(4, 10), torch.arange(4))
        tensor(...)
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            msg = f"temperature={temperature!r} must be a number > 0 (e.g. 4.0)"
            raise NasvizError(msg)
        if not temperature > 0:
            msg = f"temperature={temperature!r} must be > 0 (e.g. 4.0)"
            raise NasvizError(msg)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
            msg = f"alpha={alpha!r} must be a number in [0, 1] (e.g. 0.9)"
            raise NasvizError(msg)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def terms(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(loss, kd, ce)``: the blended loss and its two unweighted terms."""
        if not isinstance(student_logits, Tensor) or not isinstance(teacher_logits, Tensor):
            msg = (
                "KDLoss needs the logits of student and teacher as tensors, got "
                f"{type(student_logits).__name__} and {type(teacher_logits).__name__}; for a "
                "model returning a dict or tuple, pass its logits"
            )
            raise NasvizError(msg)
        if student_logits.shape != teacher_logits.shape:
            msg = (
                f"KDLoss: student logits {tuple(student_logits.shape)} and teacher logits "
                f"{tuple(teacher_logits.shape)} differ in shape; both models must predict the "
                "same classes"
            )
            raise NasvizError(msg)
        t = self.temperature
        classes = student_logits.shape[-1]
        s_rows = student_logits.reshape(-1, classes).float()
        t_rows = teacher_logits.detach().reshape(-1, classes).float()
        kd = F.kl_div(
            F.log_softmax(s_rows / t, dim=-1),
            F.log_softmax(t_rows / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        if target is None:
            return kd, kd, None
        ce = F.cross_entropy(s_rows, target.reshape(-1))
        return self.alpha * kd + (1.0 - self.alpha) * ce, kd, ce

    @override
    def forward(
        self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None
    ) -> Tensor:
        return self.terms(student_logits, teacher_logits, target)[0]

    @override
    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, alpha={self.alpha:g}"


def feature_loss(
    student: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    kept: Mapping[str, tuple[int, Tensor | None]],
) -> Tensor:
    """Mean over modules of ``mse(student[m], teacher[m][kept channels])``.

    ``kept[m]`` is ``(channel dim, index of the teacher channels the student kept)`` (``None``:
    all of them). A shape mismatch after the selection raises, naming the module.
    """
    losses = []
    for name, (dim, index) in kept.items():
        if name not in student or name not in teacher:
            missing = "student" if name not in student else "teacher"
            msg = (
                f"feature {name!r}: the {missing} did not run that module in this forward pass; "
                "pass features= with modules both models call"
            )
            raise NasvizError(msg)
        s, t = student[name], teacher[name]
        if not isinstance(s, Tensor) or not isinstance(t, Tensor):
            msg = (
                f"feature {name!r}: the module returns {type(s).__name__}, not a tensor; pick a "
                "module with a tensor output (a conv, a norm, a linear)"
            )
            raise NasvizError(msg)
        t = t.detach()
        if index is not None:
            t = t.index_select(dim, index.to(t.device))
        if s.shape != t.shape:
            msg = (
                f"feature {name!r}: the student's output {tuple(s.shape)} does not match the "
                f"teacher's kept channels {tuple(t.shape)}; the student was not exported from a "
                "subnet of this teacher"
            )
            raise NasvizError(msg)
        losses.append(F.mse_loss(s.float(), t.float()))
    if not losses:
        msg = "feature_loss: no modules to match (kept is empty)"
        raise NasvizError(msg)
    return torch.stack(losses).mean()
