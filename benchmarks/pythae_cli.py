"""The 784-400-40 Bernoulli VAE trained with pythae's BaseTrainer from a fresh process: the pythae side of
``bench_cli.py``. The data are read with vaekit's loader (the same parse for both), then pythae's own path:
BaseDataset, BaseTrainer (train and eval data sets, Adam lr 1e-3, batch 100), its best model written.

usage: python benchmarks/pythae_cli.py --data-dir DIR --out DIR [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    from pythae_twin import pythae_vae
    from vaekit.data import load_dataset

    logging.getLogger("pythae").setLevel(logging.ERROR)
    ds = load_dataset("binarized-mnist", data_dir=args.data_dir, download=False, splits=("train", "valid"))
    train = BaseDataset(ds.train.reshape(-1, 1, 28, 28), torch.zeros(ds.train.shape[0]))
    valid = BaseDataset(ds.valid.reshape(-1, 1, 28, 28), torch.zeros(ds.valid.shape[0]))
    torch.manual_seed(0)
    cfg = BaseTrainerConfig(output_dir=args.out, per_device_train_batch_size=100, per_device_eval_batch_size=100,
                            num_epochs=args.epochs, learning_rate=1e-3, no_cuda=True)
    trainer = BaseTrainer(model=pythae_vae(), train_dataset=train, eval_dataset=valid, training_config=cfg)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()


if __name__ == "__main__":
    main()
