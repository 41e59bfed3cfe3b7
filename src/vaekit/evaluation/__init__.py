"""Evaluation: :func:`evaluate_model` and :func:`evaluate_run` (importance-sampled log p(x) with its standard error,
the ELBO and its terms, exact values where the latent space can be enumerated, the surgery, clustering, the Pareto
k-hat, AIS and the gap split of :mod:`~vaekit.evaluation.annealed`), the
result schema :class:`EvaluationResult` (:mod:`~vaekit.evaluation.evaluator`), and the exact checks of the bounds
against closed forms and grids (:mod:`~vaekit.evaluation.exact`)."""

from vaekit.bounds.kernels import likelihood_kernel as log_likelihood_kernel
from vaekit.bounds.kernels import softplus_sum_
from vaekit.bounds.weights import log_weight_stats
from vaekit.evaluation.evaluator import (
    CROSS_ENTROPY,
    DENSITY,
    DEQUANTIZED,
    FIGURE_KINDS,
    LOG_PROBABILITY,
    EvaluationResult,
    bytes_per_row,
    check_shape,
    dequantize,
    evaluate,
    evaluate_model,
    evaluate_run,
    figure_kind,
    format_table,
    json_safe,
    limit_split,
    load_model,
    load_run_data,
    plan_chunks,
    read_run_config,
    split_images,
)

__all__ = ["CROSS_ENTROPY", "DENSITY", "DEQUANTIZED", "FIGURE_KINDS", "LOG_PROBABILITY", "EvaluationResult",
           "bytes_per_row", "check_shape", "dequantize", "evaluate", "evaluate_model", "evaluate_run", "figure_kind",
           "format_table", "json_safe", "limit_split", "load_model", "load_run_data", "log_likelihood_kernel",
           "log_weight_stats", "plan_chunks", "read_run_config", "softplus_sum_", "split_images"]
