"""Runs that differ only by seed, grouped: each metric's mean and standard deviation across the seeds.

A score can vary more between training seeds than between methods (Locatello et al., 2019, for disentanglement),
so a table of single runs misleads. Runs whose settings (``RUN/config.json``, flattened) are the same but for
``seed`` and the hardware settings form one group, and each metric of a group of n runs is shown as

    mean = (1/n) sum_i m_i,   SD = sqrt( sum_i (m_i - mean)^2 / (n - 1) )      (the sample SD)

over the runs that have the metric (n is stated; a group of one run has no SD). The SD describes the spread of
the runs, not the uncertainty of the mean (that is SD / sqrt(n)). A run without config.json is a group of its
own. The groups are shown only when one holds two runs or more: with one seed per setting nothing changes.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Stat:
    """A metric across the runs of a group: the mean, the sample SD (None for one value) and the number of runs."""

    mean: float
    sd: float | None
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "n": self.n}

    def html(self, digits: int = 3) -> str:
        text = f"{self.mean:.{digits}f}"
        return text + (f" &plusmn; {self.sd:.{digits}f}" if self.sd is not None else "")


def mean_sd(values: Sequence[Any]) -> Stat | None:
    """The mean and the sample SD (n - 1 in the denominator) of the finite numbers among ``values``; None when
    there are none."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return None
    mean = math.fsum(xs) / len(xs)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return Stat(mean, sd, len(xs))


@dataclass
class SeedGroup:
    """Runs of the same settings but for the seed: their names, seeds and each metric's :class:`Stat`."""

    label: str
    runs: list[str]
    seeds: list[Any]
    stats: dict[str, Stat]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "runs": list(self.runs), "seeds": list(self.seeds), "n": len(self.runs),
                "metrics": {key: s.to_dict() for key, s in self.stats.items()}}


def _key(flat: Mapping[str, Any], ignore: Collection[str]) -> str | None:
    """What a group shares: the settings but the seed and ``ignore``, as text; None without settings."""
    if not flat:
        return None
    return json.dumps({k: v for k, v in flat.items() if k != "seed" and k not in ignore}, sort_keys=True, default=str)


def _labels(reps: Sequence[Mapping[str, Any]], names: Sequence[str], ignore: Collection[str]) -> list[str]:
    """Each group named by the settings (but the seed) in which it differs from the others: ``beta=0.5``."""
    from vaekit.pages.kit import fmt

    keys: list[str] = []
    for flat in reps:
        keys += [k for k in flat if k not in keys and k != "seed" and k not in ignore]
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in reps}) > 1]
    if not differ:
        return ["all runs" if len(reps) == 1 else name for name in names]
    return [", ".join(f"{k}={fmt(flat.get(k, '(not set)'))}" for k in differ) for flat in reps]


def seed_groups(names: Sequence[str], configs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]],
                keys: Sequence[str], ignore: Collection[str] = ()) -> list[SeedGroup]:
    """The runs (``names``, flattened ``configs``, metric ``rows``) grouped by their settings but ``seed`` and
    ``ignore``, in the order of their first run; each group with the :func:`mean_sd` of every metric of ``keys``
    that one of its runs has."""
    members: dict[Any, list[int]] = {}
    for i, flat in enumerate(configs):
        key = _key(flat, ignore)
        members.setdefault(key if key is not None else ("run", i), []).append(i)
    groups = list(members.values())
    labels = _labels([configs[g[0]] for g in groups], [names[g[0]] for g in groups], ignore)
    out = []
    for label, idx in zip(labels, groups):
        stats = {key: mean_sd([rows[i].get(key) for i in idx]) for key in keys}
        out.append(SeedGroup(label, [names[i] for i in idx], [configs[i].get("seed") for i in idx],
                             {k: s for k, s in stats.items() if s is not None}))
    return out


def grouped(groups: Sequence[SeedGroup]) -> bool:
    """Some group holds two runs or more (else the groups say nothing the runs do not)."""
    return any(len(g.runs) > 1 for g in groups)


def groups_section(groups: Sequence[SeedGroup], metrics: Sequence[tuple[str, str, str]]) -> str:
    """The page's section of the groups: a column per group (its seeds and n), a row per metric of ``metrics``
    ((key, quantity, notes)) that some group has, each cell mean &plusmn; SD across the group's runs."""
    head = "".join(f"<th>{html.escape(g.label)}</th>" for g in groups)
    seeds = "".join(f"<td class='num'>{html.escape(', '.join(str(s) for s in g.seeds))} (n = {len(g.runs)})</td>"
                    for g in groups)
    body = [f"<tr><td>seeds</td>{seeds}<td>the runs of each group differ only by seed</td></tr>"]
    for key, quantity, note in metrics:
        if not any(key in g.stats for g in groups):
            continue
        cells = []
        for g in groups:
            s = g.stats.get(key)
            text = "n/a" if s is None else s.html() + (f" (n = {s.n})" if s.n != len(g.runs) else "")
            cells.append(f"<td class='num'>{text}</td>")
        body.append(f"<tr><td>{quantity}</td>{''.join(cells)}<td>{note}</td></tr>")
    return ("<h2>Across seeds: mean &plusmn; SD</h2>"
            "<p class='sub'>Runs whose settings differ only by <code>seed</code> are one group. Each cell is the mean "
            "&plusmn; the sample standard deviation (n &minus; 1 in the denominator) across the group's n runs, "
            "a spread of runs, not a standard error; a group of one run has no SD. Scores can vary more across "
            "seeds than across methods (Locatello et al., 2019).</p>"
            f"<table><tr><th>quantity</th>{head}<th>notes</th></tr>{''.join(body)}</table>")
