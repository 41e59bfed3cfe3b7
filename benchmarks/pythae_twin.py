"""The 784-400-40 Bernoulli MLP VAE written for pythae (its BaseEncoder / BaseDecoder
interface), shared by the benchmarks that compare vaekit with pythae."""

from __future__ import annotations

from torch import nn

D, H, L = 784, 400, 40


def pythae_vae(model=None):
    """A pythae ``VAE`` of the 784-400-40 shape; with a vaekit ``model``, the same weights."""
    import torch
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(D, H), nn.ReLU())
            self.mu, self.lv = nn.Linear(H, L), nn.Linear(H, L)

        def forward(self, x):
            h = self.body(x.reshape(-1, D))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.lv(h))

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(L, H), nn.ReLU(), nn.Linear(H, D), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.body(z).reshape(-1, 1, 28, 28))

    enc, dec = Encoder(), Decoder()
    if model is not None:
        with torch.no_grad():
            e0, e2 = model.encoder[0], model.encoder[2]
            enc.body[0].weight.copy_(e0.weight)
            enc.body[0].bias.copy_(e0.bias)
            enc.mu.weight.copy_(e2.weight[:L])  # vaekit's encoder outputs [mu, logvar]
            enc.mu.bias.copy_(e2.bias[:L])
            enc.lv.weight.copy_(e2.weight[L:])
            enc.lv.bias.copy_(e2.bias[L:])
            for i in (0, 2):
                dec.body[i].weight.copy_(model.decoder[i].weight)
                dec.body[i].bias.copy_(model.decoder[i].bias)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=L, reconstruction_loss="bce")
    return VAE(cfg, encoder=enc, decoder=dec)
