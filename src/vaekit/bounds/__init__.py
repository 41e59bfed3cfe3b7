"""Bounds on log p(x) and what computing them costs: exact enumeration over discrete codes
(:mod:`~vaekit.bounds.enumeration`) and the sizing of chunks of importance samples (:mod:`~vaekit.bounds.sizing`)."""
