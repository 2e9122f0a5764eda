"""Ablation pairs from an experiment's tables: each switched model against the model it varies.

A model named ``<base>_<switch>`` (``scva_dropout``) is the variant of ``<base>`` (``scva``), the
longest such base in the table. Its row gives both means (± std over splits) and the paired tests
the aggregation already wrote (``significance.csv``), so the numbers are the report's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agiqa.errors import DataError
from agiqa.report.tables import format_p


@dataclass(frozen=True)
class AblationRow:
    base: str
    variant: str
    base_mean: float
    base_std: float
    variant_mean: float
    variant_std: float
    difference: float  # base - variant
    p_bootstrap: float
    p_corrected_t: float


def ablation_pairs(models: Iterable[str]) -> list[tuple[str, str]]:
    """(base, variant) for every model whose name extends another's by ``_<switch>``."""
    names = sorted(set(models))
    pairs = []
    for variant in names:
        bases = [b for b in names if b != variant and variant.startswith(b + "_")]
        if bases:
            pairs.append((max(bases, key=len), variant))
    return pairs


def ablation_rows(
    tables: Path, protocol: str, dimension: str, metric: str = "srcc"
) -> list[AblationRow]:
    """The pairs of one protocol and dimension, with the test part's paired tests."""
    summary = _read(tables / "main.csv")
    tests = _read(tables / "significance.csv")
    summary = summary[(summary["protocol"] == protocol) & (summary["dimension"] == dimension)]
    if summary.empty:
        raise DataError(f"{tables / 'main.csv'}: no rows for protocol {protocol}, {dimension}")
    means = summary.set_index("model")
    tests = tests[
        (tests["protocol"] == protocol)
        & (tests["dimension"] == dimension)
        & (tests["part"] == "test")
        & (tests["metric"] == metric)
    ]
    return [
        _row(base, variant, means, tests, metric, tables)
        for base, variant in ablation_pairs(means.index)
    ]


def _row(
    base: str, variant: str, means: pd.DataFrame, tests: pd.DataFrame, metric: str, tables: Path
) -> AblationRow:
    forward = tests[(tests["model_a"] == base) & (tests["model_b"] == variant)]
    backward = tests[(tests["model_a"] == variant) & (tests["model_b"] == base)]
    if len(forward) + len(backward) != 1:
        raise DataError(f"{tables / 'significance.csv'}: no single test of {base} vs {variant}")
    test = (forward if len(forward) else backward).iloc[0]
    sign = 1.0 if len(forward) else -1.0
    return AblationRow(
        base=base,
        variant=variant,
        base_mean=float(means.loc[base, f"{metric}_mean"]),
        base_std=float(means.loc[base, f"{metric}_std"]),
        variant_mean=float(means.loc[variant, f"{metric}_mean"]),
        variant_std=float(means.loc[variant, f"{metric}_std"]),
        difference=sign * float(test["diff"]),
        p_bootstrap=float(test["p_bootstrap"]),
        p_corrected_t=float(test["p_corrected_t"]),
    )


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing: run the experiment's aggregation first")
    return pd.read_csv(path)


def ablations_markdown(rows: list[AblationRow], metric: str = "srcc") -> str:
    """A Markdown table: both models' mean ± std, the difference and both paired p-values."""
    label = metric.upper()
    lines = [
        f"| model | {label} | switched | {label} | difference | p (bootstrap) | p (corrected t) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| `{row.base}` | {row.base_mean:.3f} ± {row.base_std:.3f} | `{row.variant}` | "
            f"{row.variant_mean:.3f} ± {row.variant_std:.3f} | {row.difference:+.3f} | "
            f"{format_p(row.p_bootstrap)} | {format_p(row.p_corrected_t)} |"
        )
    return "\n".join(lines) + "\n"
