"""``vaekit info``: entropy, cross-entropy and KL divergence of two discrete distributions."""

from __future__ import annotations

import argparse
import math

from vaekit.commands._args import float_list
from vaekit.commands._json import print_json
from vaekit.errors import VaekitError


def _base(text: str) -> float:
    if text.lower() == "e":
        return math.e
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected e, 2, 10 or another number > 0 and != 1, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value == 1:
        raise argparse.ArgumentTypeError(f"the base must be a number > 0 and != 1 (e.g. e or 2), got {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info",
        help="entropy, cross-entropy and KL divergence of two discrete distributions",
        description="Print H(p), H(q), H(p,q), H(q,p), KL(p||q), KL(q||p) and the check "
        "KL(p||q) = H(p,q) - H(p). Example: vaekit info --p 0.5,0.5 --q 0.1,0.9",
    )
    parser.add_argument("--p", required=True, type=float_list, metavar="P1,P2,...",
                        help="probabilities of p, comma-separated")
    parser.add_argument("--q", required=True, type=float_list, metavar="Q1,Q2,...",
                        help="probabilities of q, comma-separated")
    parser.add_argument("--base", type=_base, default=math.e,
                        help="logarithm base: e (nats, default), 2 (bits), ...")
    parser.add_argument("--normalize", action="store_true",
                        help="treat --p and --q as counts or weights and normalize them")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _unit(base: float) -> str:
    if base == math.e:
        return "nats"
    if base == 2:
        return "bits"
    if base == 10:
        return "hartleys"
    return f"log base {base:g}"


def run(args: argparse.Namespace) -> int:
    from vaekit.analysis import info

    if len(args.p) != len(args.q):
        raise VaekitError(
            f"--p has {len(args.p)} values and --q has {len(args.q)}; give both over the same outcomes"
        )
    p, q = args.p, args.q
    try:
        if args.normalize:
            p = info.as_distribution(p, normalize=True).tolist()
            q = info.as_distribution(q, normalize=True, name="q").tolist()
        values = info.summary(p, q, base=args.base)
    except ValueError as exc:
        msg = str(exc).replace("p ", "--p ", 1) if str(exc).startswith("p ") else str(exc)
        msg = msg.replace("q ", "--q ", 1) if msg.startswith("q ") else msg
        raise VaekitError(msg.replace("pass normalize=True", "pass --normalize")) from None
    if args.json:
        print_json(values)
        return 0
    unit = _unit(args.base)
    rows = [
        ("H(p)", "entropy of p", values["entropy_p"]),
        ("H(q)", "entropy of q", values["entropy_q"]),
        ("H(p,q)", "cross-entropy", values["cross_entropy_pq"]),
        ("H(q,p)", "cross-entropy", values["cross_entropy_qp"]),
        ("KL(p||q)", "divergence", values["kl_pq"]),
        ("KL(q||p)", "divergence", values["kl_qp"]),
    ]
    print(f"p = {_fmt_vec(p)}   q = {_fmt_vec(q)}   ({unit})")
    for symbol, what, value in rows:
        print(f"  {symbol:<9} {value:>10.4f}   {what}")
    check = values["cross_entropy_pq"] - values["entropy_p"]
    ok = math.isclose(check, values["kl_pq"], rel_tol=1e-9, abs_tol=1e-12) or (
        math.isinf(check) and math.isinf(values["kl_pq"])
    )
    print(f"  check: H(p,q) - H(p) = {check:.4f} = KL(p||q) {'✓' if ok else '✗'}")
    if not math.isclose(values["kl_pq"], values["kl_qp"], rel_tol=1e-9, abs_tol=1e-12):
        print("  KL(p||q) != KL(q||p): the divergence is not symmetric")
    return 0


def _fmt_vec(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"
