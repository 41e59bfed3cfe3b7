"""What vaekit shows a person: figures (:mod:`~vaekit.pages.viz`), the run report (:mod:`~vaekit.pages.report`),
the comparison of runs (:mod:`~vaekit.pages.compare`), the beta sweep (:mod:`~vaekit.pages.sweep`) and the latent
explorer (:mod:`~vaekit.pages.explorer`)."""
