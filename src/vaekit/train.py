"""The trainer's public names in one place (:mod:`vaekit.training` holds the parts): :func:`train`, :func:`fit`,
:class:`TrainResult`, :class:`LossModule` and the helpers scripts and tests use."""

from vaekit.io.runs import read_metrics, run_lock
from vaekit.runtime import resolve_device
from vaekit.training import (
    CHECK_EVERY,
    IN_MEMORY,
    WEIGHT_LIMIT,
    LossModule,
    TrainingDiverged,
    TrainResult,
    check_likelihood_data,
    evaluate_elbo_sums,
    fit,
    in_memory_dataset,
    likelihood_levels,
    load_data,
    model_for,
    objective_for,
    sample_grid,
    selection,
    train,
)
from vaekit.training.step import (
    _AdamUpdate,
    _BatchBuffer,
    _first_nonfinite,
    _fused_if_supported,
    _make_step,
    _skip_flag,
)

__all__ = ["CHECK_EVERY", "IN_MEMORY", "WEIGHT_LIMIT", "LossModule", "TrainResult", "TrainingDiverged",
           "_AdamUpdate", "_BatchBuffer", "_first_nonfinite", "_fused_if_supported", "_make_step", "_skip_flag",
           "check_likelihood_data", "evaluate_elbo_sums", "fit", "in_memory_dataset", "likelihood_levels",
           "load_data", "model_for", "objective_for", "read_metrics", "resolve_device", "run_lock", "sample_grid",
           "selection", "train"]
