"""The 784-400-40 Bernoulli MLP VAE written in JAX + optax as an expert JAX user would, for the benchmarks.

The same model as vaekit's default: encoder 784 -> 400 (ReLU) -> 80 = [mu, log-variance] (the log-variance
floored at -12, as vaekit's Gaussian posterior does), decoder 40 -> 400 (ReLU) -> 784 Bernoulli logits, prior
N(0, I), analytic KL, loss = -mean_x [log p(x|z) - KL], Adam (optax, lr 1e-3). The initial weights follow
PyTorch's ``nn.Linear`` default, W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

Training: the whole epoch is one jit'd ``lax.scan`` over the steps (each step gathers its batch from the
device-resident data set with a slice of the epoch's permutation), or, for comparison, a jit'd step called
from a Python loop (one dispatch a step, the batch gathered inside). Evaluation: log p(x) = logsumexp_k log w_k
- log K, K importance samples from q(z|x), drawn in chunks under ``lax.scan`` with a running logsumexp.

Threads: set them with :func:`threads.use_threads` before jax is imported (XLA sizes its CPU thread pool from
the process's CPU affinity; see that module).
"""

from __future__ import annotations

import time
from typing import Any

D, H, L, B = 784, 400, 40, 100
MIN_LOGVAR = -12.0


def available() -> bool:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError:
        return False
    return True


def version() -> str:
    import jax
    import optax

    return f"jax {jax.__version__}, optax {optax.__version__}"


# -- the model ---------------------------------------------------------------------------------------


def init_params(seed: int = 0) -> dict[str, Any]:
    """PyTorch-default initial weights, stored (in, out) so that a layer is x @ W + b."""
    import jax
    import jax.numpy as jnp

    sizes = {"e1": (D, H), "e2": (H, 2 * L), "d1": (L, H), "d2": (H, D)}
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * len(sizes))
    params = {}
    for i, (name, (fan_in, fan_out)) in enumerate(sizes.items()):
        bound = 1.0 / fan_in**0.5
        params[name] = {"w": jax.random.uniform(keys[2 * i], (fan_in, fan_out), jnp.float32, -bound, bound),
                        "b": jax.random.uniform(keys[2 * i + 1], (fan_out,), jnp.float32, -bound, bound)}
    return params


def params_from_vaekit(model) -> dict[str, Any]:
    """The weights of a vaekit 784-400-40 VAE (MLP encoder and decoder) as JAX parameters."""
    import jax.numpy as jnp

    layers = {"e1": model.encoder[0], "e2": model.encoder[2], "d1": model.decoder[0], "d2": model.decoder[2]}
    return {name: {"w": jnp.asarray(lin.weight.detach().cpu().numpy().T),
                   "b": jnp.asarray(lin.bias.detach().cpu().numpy())} for name, lin in layers.items()}


def _encode(params, x):
    import jax
    import jax.numpy as jnp

    h = jax.nn.relu(x @ params["e1"]["w"] + params["e1"]["b"])
    out = h @ params["e2"]["w"] + params["e2"]["b"]
    mu, logvar = out[..., :L], out[..., L:]
    return mu, jnp.maximum(logvar, MIN_LOGVAR)


def _logits(params, z):
    import jax

    h = jax.nn.relu(z @ params["d1"]["w"] + params["d1"]["b"])
    return h @ params["d2"]["w"] + params["d2"]["b"]


def _bernoulli_log_prob(x, logits):
    """sum_d [x_d l_d - softplus(l_d)], nats."""
    import jax

    return (x * logits - jax.nn.softplus(logits)).sum(-1)


def loss_fn(params, x, key):
    """-mean ELBO of the batch, single-sample reparameterized, analytic KL."""
    import jax
    import jax.numpy as jnp

    mu, logvar = _encode(params, x)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    rec = _bernoulli_log_prob(x, _logits(params, z))
    kl = 0.5 * (mu * mu + jnp.exp(logvar) - 1.0 - logvar).sum(-1)
    return -(rec - kl).mean()


# -- training -----------------------------------------------------------------------------------------


class Trainer:
    """Adam on the -ELBO over a device-resident data set; one epoch per call, by ``lax.scan`` or a Python loop."""

    def __init__(self, x_train, lr: float = 1e-3, batch: int = B, seed: int = 0):
        import jax
        import jax.numpy as jnp
        import optax

        self.x = jnp.asarray(x_train.reshape(-1, D))
        self.n, self.batch = int(self.x.shape[0]), batch
        self.steps = self.n // batch
        self.opt = optax.adam(lr)
        self.params = init_params(seed)
        self.opt_state = self.opt.init(self.params)
        self.key = jax.random.PRNGKey(seed + 1)
        opt = self.opt

        def step(carry, i, x, perm, key):
            params, opt_state = carry
            idx = jax.lax.dynamic_slice(perm, (i * batch,), (batch,))
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], jax.random.fold_in(key, i))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        def epoch_scan(params, opt_state, x, key):
            perm_key, step_key = jax.random.split(key)
            perm = jax.random.permutation(perm_key, x.shape[0])
            (params, opt_state), losses = jax.lax.scan(
                lambda c, i: step(c, i, x, perm, step_key), (params, opt_state), jnp.arange(self.steps))
            return params, opt_state, losses.mean()

        self._epoch_scan = jax.jit(epoch_scan, donate_argnums=(0, 1))
        self._step = jax.jit(lambda params, opt_state, i, x, perm, key: step((params, opt_state), i, x, perm, key),
                             donate_argnums=(0, 1))
        self._perm = jax.jit(lambda key, n: jax.random.permutation(key, n), static_argnums=1)

    def compile(self) -> float:
        """Compile both variants (seconds), on copies of the state so that training starts from the start."""
        import jax

        t0 = time.perf_counter()
        self._epoch_scan.lower(self.params, self.opt_state, self.x, self.key).compile()
        self._step.lower(self.params, self.opt_state, 0, self.x, self._perm(self.key, self.n), self.key).compile()
        jax.block_until_ready(self._perm(self.key, self.n))
        return time.perf_counter() - t0

    def epoch_scan(self) -> float:
        """One epoch as one jit'd ``lax.scan``; returns the mean training loss (the -ELBO, nats)."""
        import jax

        self.key, sub = jax.random.split(self.key)
        self.params, self.opt_state, loss = self._epoch_scan(self.params, self.opt_state, self.x, sub)
        return float(jax.block_until_ready(loss))

    def epoch_loop(self) -> float:
        """One epoch, the jit'd step called from Python once per batch; returns the last step's loss."""
        import jax

        self.key, perm_key, step_key = jax.random.split(self.key, 3)
        perm = self._perm(perm_key, self.n)
        params, opt_state, loss = self.params, self.opt_state, None
        for i in range(self.steps):
            (params, opt_state), loss = self._step(params, opt_state, i, self.x, perm, step_key)
        self.params, self.opt_state = params, opt_state
        return float(jax.block_until_ready(loss))


# -- evaluation ---------------------------------------------------------------------------------------


def log_px_fn(k: int, k_chunk: int):
    """A jit'd (params, x (N, D), key) -> log p(x) (N,) with ``k`` importance samples, ``k_chunk`` at a time."""
    import jax
    import jax.numpy as jnp

    if k % k_chunk:
        raise ValueError(f"k = {k} must be a multiple of k_chunk = {k_chunk}")

    def log_px(params, x, key):
        mu, logvar = _encode(params, x)
        sigma = jnp.exp(0.5 * logvar)

        def chunk(lse, key_i):
            eps = jax.random.normal(key_i, (k_chunk, *mu.shape), mu.dtype)
            z = mu + sigma * eps
            rec = _bernoulli_log_prob(x, _logits(params, z))  # (k_chunk, N)
            log_q = -0.5 * (jnp.log(2 * jnp.pi) + logvar + eps * eps).sum(-1)
            log_p = -0.5 * (jnp.log(2 * jnp.pi) + z * z).sum(-1)
            return jnp.logaddexp(lse, jax.nn.logsumexp(rec + log_p - log_q, axis=0)), None

        lse0 = jnp.full(x.shape[:1], -jnp.inf, x.dtype)
        lse, _ = jax.lax.scan(chunk, lse0, jax.random.split(key, k // k_chunk))
        return lse - jnp.log(k)

    return jax.jit(log_px)
