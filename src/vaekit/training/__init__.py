"""The trainer: minibatch Adam on the objective's loss, validation, checkpoints, resume.

Two entry points share one loop. :func:`fit` trains a model the user built (any encoder and decoder) on tensors,
arrays or a vaekit data set; :func:`train` builds the model a :class:`~vaekit.config.TrainConfig` describes
(what ``vaekit train`` and the recipes do) and calls the same loop.

Each epoch ends with the validation figures (a fixed noise seed, so epochs are comparable), a line in
``RUN/metrics.jsonl``, the best weights in ``RUN/model.safetensors`` (+ ``model.json``) and the full training
state in ``RUN/checkpoint.safetensors`` (atomic writes), from which ``resume=True`` continues bit for bit.
Under ``torchrun`` each process takes its share of every epoch and DDP averages the gradients.

The parts: :mod:`~vaekit.training.build` (model, objective, estimator), :mod:`~vaekit.training.step` (one update),
:mod:`~vaekit.training.fast_step` (hand-written steps of standard models, registered by the types of their parts),
:mod:`~vaekit.training.loop` (the epochs), :mod:`~vaekit.training.callbacks` (files, lines, early stopping, ...),
:mod:`~vaekit.training.trainer` (the entry points and the run folder).
"""

from vaekit.training.build import check_likelihood_data, likelihood_levels, model_for, objective_for, selection
from vaekit.training.data import IN_MEMORY, in_memory_dataset, load_data
from vaekit.training.loop import Loop, TrainData
from vaekit.training.reporting import sample_grid
from vaekit.training.state import WEIGHT_LIMIT, TrainingDiverged
from vaekit.training.step import CHECK_EVERY, LossModule
from vaekit.training.trainer import TrainResult, fit, train
from vaekit.training.validation import evaluate_elbo_sums

__all__ = ["CHECK_EVERY", "IN_MEMORY", "WEIGHT_LIMIT", "LossModule", "Loop", "TrainData", "TrainResult",
           "TrainingDiverged", "check_likelihood_data", "evaluate_elbo_sums", "fit", "in_memory_dataset",
           "likelihood_levels", "load_data", "model_for", "objective_for", "sample_grid", "selection", "train"]
