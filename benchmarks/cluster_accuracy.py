"""Clustering accuracy of trained mixture models on the labelled MNIST test images.

Static binarized MNIST has no labels, so its models are scored on the 10,000 MNIST test images (IDX files,
8-bit grey) binarized at 1/2, against their labels: the cluster of each image (argmax q(c|x), or for the
Gaussian-mixture VAE argmax p(c | z = E_q z)) matched to the labels by the Hungarian rule (one cluster per
label) and by the many-to-one rule (each cluster to its majority label).

    python benchmarks/cluster_accuracy.py MNIST_IDX_DIR RUN [RUN ...]
"""

from __future__ import annotations

import json
import sys

import torch

from vaekit.analysis.clustering import clustering_report
from vaekit.data.idx import load_idx_split
from vaekit.evaluation import load_model


def main(argv: list[str]) -> None:
    images, labels = load_idx_split(argv[0], "t10k")
    x = (torch.from_numpy(images).float() / 255.0 > 0.5).float().reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels)
    for run in argv[1:]:
        model = load_model(run)
        with torch.no_grad():
            r = clustering_report(model, x, y)
        print(json.dumps({"run": run, "clusters": r["clusters"], "clusters_used": r["clusters_used"],
                          "hungarian": r["hungarian_accuracy"], "many_to_one": r["many_to_one_accuracy"]}))


if __name__ == "__main__":
    main(sys.argv[1:])
