"""What vaekit shows a person: figures (:mod:`~vaekit.pages.viz`), the run report (:mod:`~vaekit.pages.report`),
the comparison of runs (:mod:`~vaekit.pages.compare`, with runs grouped over seeds in :mod:`~vaekit.pages.seeds`
and the saved disentanglement scores in :mod:`~vaekit.pages.disentanglement`), the sweep over a grid of settings
and seeds (:mod:`~vaekit.pages.sweep`, :mod:`~vaekit.pages.grid`) and the latent explorer
(:mod:`~vaekit.pages.explorer`)."""
