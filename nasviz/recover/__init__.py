"""Recovery: distil a pruned subnet from the unpruned model (logits, and features through the
channels the subnet kept), and prune iteratively.

* :func:`distill` / :class:`Distiller` - the training run (events, stop/resume, Ctrl-C safe);
* :class:`KDLoss` - the logits loss, for your own training loop;
* :func:`kept_channels` - which teacher channels a student kept, per module;
* :func:`iterative_prune` - prune, distil, prune deeper.
"""

from nasviz.recover.channels import Lineage, kept_channels, lineage
from nasviz.recover.distill import Distiller, distill
from nasviz.recover.events import (
    DistillEpoch,
    DistillFinished,
    DistillStarted,
    DistillStep,
    DistillStopped,
)
from nasviz.recover.iterative import IterativeResult, iterative_prune
from nasviz.recover.loss import KDLoss, feature_loss
from nasviz.recover.result import DistillResult

__all__ = [
    "DistillEpoch",
    "DistillFinished",
    "DistillResult",
    "DistillStarted",
    "DistillStep",
    "DistillStopped",
    "Distiller",
    "IterativeResult",
    "KDLoss",
    "Lineage",
    "distill",
    "feature_loss",
    "iterative_prune",
    "kept_channels",
    "lineage",
]
