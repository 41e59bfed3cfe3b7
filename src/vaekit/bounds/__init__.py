"""Bounds on log p(x) and what computing them costs: exact enumeration over discrete codes
(:mod:`~vaekit.bounds.enumeration`), the sizing of chunks of importance samples (:mod:`~vaekit.bounds.sizing`),
annealed importance sampling forward and reverse (:mod:`~vaekit.bounds.ais`), the BDMC sandwich on simulated data
(:mod:`~vaekit.bounds.bdmc`) and the Pareto k-hat of importance weights (:mod:`~vaekit.bounds.pareto`)."""
