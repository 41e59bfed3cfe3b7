"""``vaekit data``: show a data set's splits, image shape, value type and labels.

Saves nothing: it downloads only with ``--download`` and does not write the ``.amat`` parse
cache. When some files are missing but others give some splits (e.g. only the MNIST
``t10k-`` files), it reports the splits it can read and says which files are missing and
where to get them (exit status 0); with no usable file it is an error (exit status 2).
``--json`` prints one JSON object on the last line of stdout:
``{"dataset", "shape": [C, H, W], "binary", "levels", "splits": {"train", "valid", "test"}, "images",
"factors", ...}`` (``levels``: the number of grey levels, 2 binary, 256 for 8-bit images, null when real-valued;
``images``: the images of the three splits together; ``factors``: for a data set with known generative factors,
one ``{"name", "values", "min", "max"}`` per factor, ``values`` the number of values it takes and ``min`` /
``max`` their range, else null).

The data sets drawn from a factor grid (``dsprites``, ``shapes3d``) are described from their grid and labels
without rendering or reading their images (the whole dSprites grid would take 11 GiB as float32).
"""

from __future__ import annotations

import argparse
import sys

from vaekit.commands._args import nonnegative_int, positive_int, seed_int
from vaekit.commands._json import print_json

_DESCRIPTION = (
    "Load a data set and print its splits and their sizes, the image shape (C x H x W), the "
    "value type (binary {0,1}, grey levels k/(L-1), or continuous in [0,1]), the number of grey levels L "
    "and the labels. DATASET is binarized-mnist, mnist, mnist-grey, fashion-mnist, kmnist, cifar10, "
    "digits, dsprites, shapes3d, one of mnist-t10k, fashion-mnist-t10k, kmnist-t10k, or images:DIR, npy:FILE, "
    "npz:FILE. "
    "mnist keeps its 8-bit grey levels unless --binarize says otherwise (mnist-grey: the same, binarization "
    "refused). With only the t10k- test files at hand, mnist lists the test split, and mnist-t10k carves "
    "train / valid / test (7,000 / 1,000 / 2,000; the test part fixed, the validation part by --seed) out "
    "of those 10,000 test images, for training without the train- files. cifar10 reads the binary archive "
    "cifar-10-binary.tar.gz as published (verified by its MD5 when downloaded). For a data set with known "
    "generative factors (dsprites; shapes3d, from DeepMind's 3dshapes.h5 in the data folder) it prints one line "
    "per factor (its name, its number of values and their range), describing the factor grid without loading "
    "the images."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data", help="show a data set's splits, shape and value type", description=_DESCRIPTION
    )
    p.add_argument(
        "--dataset",
        required=True,
        metavar="DATASET",
        help="name or images:DIR / npy:FILE / npz:FILE",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the data set's files (default $VAEKIT_DATA_DIR, else ~/.cache/vaekit)",
    )
    p.add_argument(
        "--binarize",
        choices=("none", "static", "dynamic", "threshold"),
        default=None,
        help="binarization protocol for grey-level data (default: none)",
    )
    p.add_argument("--valid-size", type=nonnegative_int, metavar="N", help="validation images")
    p.add_argument("--test-size", type=nonnegative_int, metavar="N", help="test images (own data)")
    p.add_argument(
        "--image-size", type=positive_int, metavar="PX", help="resize images:DIR to PX x PX"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the validation split")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="a data set drawn from a factor grid (dsprites, shapes3d): a fixed random subset of N images")
    p.add_argument("--download", action="store_true", help="download missing files")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the data set's info, 'images' (the three splits' total) and "
                        "'factors' (a list of {name, values (how many), min, max}, or null without factors)")
    p.set_defaults(func=run)


def _value_type(info: dict) -> str:
    if info["dynamic"]:
        return "binary {0,1}: train grey levels in [0,1] resampled x~Bernoulli(p) per batch"
    if info["binary"]:
        how = {"static": "static binarization", "threshold": "thresholded at 0.5"}
        return "binary {0,1}" + (f" ({how[info['binarize']]})" if info["binarize"] in how else "")
    if info.get("levels"):
        return "grey levels in [0,1] (discrete, see levels)"
    if info.get("tabular"):
        rule = info.get("standardisation")
        return "a table of real values" + (f", standardised by the training split's mean and SD (log-Jacobian "
                                            f"{rule['log_jacobian']:.4f} nats)" if rule else " (raw)")
    return "continuous in [0,1] (real-valued)"


def _factors(factors) -> list[dict] | None:
    """One ``{"name", "values" (how many), "min", "max"}`` per factor of a ``Factors``, or None."""
    if factors is None:
        return None
    return [{"name": n, "values": int(size), "min": float(v.min()), "max": float(v.max())}
            for n, size, v in zip(factors.names, factors.sizes, factors.values)]


def _describe(spec: str, kwargs: dict) -> tuple[dict, object] | None:
    """(info, factors) of a data set drawn from a factor grid, described without its images; None for the others
    (and for a factor data set whose loader was replaced)."""
    from vaekit.data import DATASETS, _canonical
    from vaekit.data.dsprites import describe_dsprites, load_dsprites
    from vaekit.data.shapes3d import describe_shapes3d, load_shapes3d

    entry = DATASETS.get(_canonical(spec))
    describe = {load_dsprites: describe_dsprites, load_shapes3d: describe_shapes3d}.get(entry.loader) \
        if entry is not None else None
    if describe is None:
        return None
    return describe(**{**kwargs, "cache": True})  # a describer reads a cache but never writes one


def _load(spec: str, kwargs: dict) -> tuple[dict, object, str | None]:
    """(info, factors, a note on missing files or None): described when :func:`_describe` can, else loaded."""
    from vaekit.data import MissingFilesError, load_dataset

    described = _describe(spec, kwargs)
    if described is not None:
        return described[0], described[1], None
    note = None
    try:
        ds = load_dataset(spec, **kwargs)
    except MissingFilesError as exc:
        if not exc.available:
            raise
        ds = load_dataset(spec, splits=exc.available, **kwargs)
        note = str(exc)
    return ds.info(), ds.factors, note


def _print_text(info: dict, factors: list[dict] | None, note: str | None) -> None:
    c, h, w = info["shape"]
    sizes = info["splits"]
    print(f"dataset  {info['dataset']}")
    print(f"source   {info['source']}")
    print(f"shape    {c}x{h}x{w} (C x H x W)")
    print(f"values   {_value_type(info)}")
    levels = info.get("levels")
    print(f"levels   {levels} grey levels per channel (x = k / {levels - 1})" if levels
          else "levels   real-valued (no grey-level grid)")
    if info["labels"]:
        classes = info["classes"]
        shown = f": {', '.join(classes)}" if classes and len(classes) <= 20 else ""
        count = f"{len(classes)} classes" if classes else "integer labels"
        print(f"labels   {count}{shown}")
    else:
        print("labels   none")
    for f in factors or ():
        print(f"factor   {f['name']:<12} {f['values']:>4} values  {f['min']:g} .. {f['max']:g}")
    print(f"images   {info['images']} in all")
    for split in ("train", "valid", "test"):
        absent = "  (not available: files missing)" if split in info["not_loaded"] else ""
        print(f"{split:<8} {sizes[split]:>7} images{absent}")
    if note:
        print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    kwargs = dict(
        data_dir=args.data_dir,
        valid_size=args.valid_size,
        test_size=args.test_size,
        binarize=None if args.binarize in (None, "none") else args.binarize,
        image_size=args.image_size,
        seed=args.seed,
        download=args.download,
        cache=False,
    )
    if args.limit is not None:
        kwargs["limit"] = args.limit
    info, factors, note = _load(args.dataset, kwargs)
    info["images"] = int(sum(info["splits"].values()))
    info["factors"] = _factors(factors)
    if args.json:
        if note:
            print(f"vaekit data: note: {note}", file=sys.stderr)
        print_json(info)
        return 0
    _print_text(info, info["factors"], note)
    return 0
