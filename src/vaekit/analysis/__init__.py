"""What a trained model learned and how its gradients behave: information theory (:mod:`~vaekit.analysis.info`),
gradient estimators (:mod:`~vaekit.analysis.estimators`) and their variance
(:mod:`~vaekit.analysis.gradient_variance`; the SNR of IWAE_K's gradients against K for the estimators of a
reparameterized q(z|x), :mod:`~vaekit.analysis.gradient_snr`), the ELBO surgery (:mod:`~vaekit.analysis.surgery`),
clustering (:mod:`~vaekit.analysis.clustering`), densities fitted to codes after training
(:mod:`~vaekit.analysis.posthoc`) and the ELBO's gap split into approximation and amortization
(:mod:`~vaekit.analysis.gaps`)."""
