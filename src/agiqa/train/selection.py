"""How a fold job picks its epoch: agiqa's rule on validation, the seed code's rule on test.

Honest protocols (selection on a validation part) always use agiqa's rule: the mean SRCC over the
trained dimensions, early stopping after ``train.patience`` epochs without improvement.

Test-selection protocols exist to measure what the published protocols report, so they select the
way the model family's seed code does (docs/methods.md, "Model selection"). A model entry names
its rule with ``train.replica_selection``; without it, the model type's seed code decides
(``SEED_CODE_RULES``), and a model without seed code gets ``DEFAULT_REPLICA_RULE``:

==================  ===========================================================================
rule                what is kept
==================  ===========================================================================
``agiqa``           best mean SRCC over the trained dimensions; early stop (``patience``)
``qiyan111_aigc``   best SRCC of the alignment dimension(s), every epoch run (qiyan111/AIGC
                    saves the checkpoint whenever SROCC_C improves, 20 epochs, no early stop)
``scva_agiqa``      best SRCC and best PLCC over every epoch, each taken separately (SCVA-AGIQA
                    reports running maxima of both, possibly from different epochs)
``clip_agiqa``      best SRCC of the quality dimension(s); early stop (``patience``; 15 in the
                    CLIP-AGIQA code DCMPLN grew out of)
``last_epoch``      the last epoch, no selection (DeQA-Score: last of 3 epochs; DepictQA: 1)
==================  ===========================================================================

A rule that names a dimension kind the model does not train (an alignment rule on a quality-only
model) falls back to every trained dimension; the job's ``metrics.json`` records the rule and the
dimensions it scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agiqa.registry import Registry


@dataclass(frozen=True)
class SelectionRule:
    """Which score of the selection part decides the epoch, and when training stops."""

    name: str
    #: Dimension kind whose SRCC is scored (None: every trained dimension).
    kind: str | None = None
    #: Stop after ``patience`` epochs without improvement; False runs every epoch.
    early_stop: bool = True
    #: Also keep the epoch with the best PLCC, separately from the best SRCC's (SCVA-AGIQA).
    separate_plcc: bool = False
    #: Keep the last epoch whatever its scores (no selection).
    last: bool = False
    #: Where the rule comes from, for docs and logs.
    source: str = ""

    def dimensions(self, trained: Sequence) -> list:
        """The trained dimensions the rule scores (all of them when none has its kind)."""
        if self.kind is None:
            return list(trained)
        chosen = [d for d in trained if d.kind == self.kind]
        return chosen or list(trained)

    def score(self, scores: Mapping[str, Mapping[str, float]], trained: Sequence, metric: str):
        """Mean ``metric`` over the scored dimensions of one evaluation (NaN when undefined)."""
        values = [scores[d.name][metric] for d in self.dimensions(trained)]
        finite = [v for v in values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan


RULES: Registry[SelectionRule] = Registry("selection rule")
for _rule in (
    SelectionRule("agiqa", source="agiqa: mean SRCC over the trained dimensions, early stop"),
    SelectionRule(
        "qiyan111_aigc",
        kind="alignment",
        early_stop=False,
        source="qiyan111/AIGC baseline.py: checkpoint kept whenever SROCC_C improves",
    ),
    SelectionRule(
        "scva_agiqa",
        early_stop=False,
        separate_plcc=True,
        source="SCVA-AGIQA main.py: running maxima of test SRCC and PLCC, taken separately",
    ),
    SelectionRule(
        "clip_agiqa",
        kind="quality",
        source="CLIP-AGIQA (DCMPLN's proxy): best test SRCC, early stop with patience 15",
    ),
    SelectionRule(
        "last_epoch",
        early_stop=False,
        last=True,
        source="DeQA-Score / DepictQA: no selection, the last checkpoint",
    ),
):
    RULES.register(_rule.name)(_rule)

#: The rule an honest protocol selects with (on its validation part).
HONEST_RULE = "agiqa"
#: model type -> the selection rule of its seed code, for the test-selection protocols.
SEED_CODE_RULES = {
    "clip_residual": "qiyan111_aigc",
    "scva": "scva_agiqa",
    "dcmpln": "clip_agiqa",
    "deqa": "last_epoch",
    "depictqa_compare": "last_epoch",
}
#: Test-selection rule of a model without seed code: that of the seed code whose protocol
#: ``literature_replica`` copies (qiyan111/AIGC's one image-level 80/20 split, two dimensions).
DEFAULT_REPLICA_RULE = "qiyan111_aigc"


def selection_rule(selection: str, model_type: str, replica_selection: str | None) -> SelectionRule:
    """The rule a fold job selects with.

    Args:
        selection: The protocol's selection part (``val`` or ``test``).
        model_type: The model entry's ``type``.
        replica_selection: The entry's ``train.replica_selection`` (None: the seed code's).
    """
    if replica_selection is not None:
        RULES.get(replica_selection)  # raises a ConfigError naming the known rules
    if selection == "val":
        return RULES.get(HONEST_RULE)
    name = replica_selection or SEED_CODE_RULES.get(model_type, DEFAULT_REPLICA_RULE)
    return RULES.get(name)
