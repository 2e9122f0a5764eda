"""Protocol labels come from the protocol's settings, never from free text that can disagree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from agiqa.data.splits import Protocol
from agiqa.errors import ConfigError
from agiqa.report.names import DisplayNames, protocol_wording
from agiqa.report.paper_tables import protocol_caption_label

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "config").glob("*.yaml"))


def test_wording_follows_folds_and_repeats() -> None:
    assert protocol_wording(Protocol(folds=3).settings()) == "prompt-grouped 3-fold"
    image = Protocol(type="image_split", folds=5, repeats=2).settings()
    assert protocol_wording(image) == "image-level 5-fold × 2"
    replica = Protocol(type="literature_replica", folds=4).settings()
    assert protocol_wording(replica) == "image-level 4-fold"


def test_labels_with_and_without_a_display_name() -> None:
    settings = {
        "kfold_grouped": Protocol(folds=3).settings(),
        "literature_replica": Protocol(type="literature_replica", folds=5, repeats=2).settings(),
    }
    names = DisplayNames(protocols={"literature_replica": "Literature replica"})
    names = names.with_protocol_settings(settings)
    types = {p: s["type"] for p, s in settings.items()}
    assert names.protocol("kfold_grouped") == "Prompt-grouped 3-fold"
    assert protocol_caption_label("kfold_grouped", types, names) == "Prompt-grouped 3-fold"
    assert (
        protocol_caption_label("literature_replica", types, names)
        == "Literature replica (image-level 5-fold × 2, test-selected)"
    )
    # A protocol the runs do not know keeps its identifier.
    assert names.protocol("other") == "other"


@pytest.mark.parametrize(
    "name", ["Prompt-grouped 5-fold", "Image-level 80/20 x 10", "Ours, 10 splits", "CV × 2"]
)
def test_a_display_name_stating_counts_is_refused(name: str) -> None:
    config = {
        "protocols": {"kfold_grouped": {"type": "kfold_grouped", "folds": 3}},
        "report": {"display_names": {"kfold_grouped": name, "quality": "Quality 5-fold is fine"}},
    }
    with pytest.raises(ConfigError, match=r"report\.display_names\.kfold_grouped: .*3-fold"):
        DisplayNames.from_config(config)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_label_protocols_by_their_settings(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    names = DisplayNames.from_config(config)
    for protocol, entry in (config.get("protocols") or {}).items():
        label = names.protocol(protocol)
        folds = int(entry.get("folds", 5))
        assert f"{folds}-fold" in label, (protocol, label)
        assert [int(n) for n in re.findall(r"(\d+)-fold", label)] == [folds], (protocol, label)
    assert DisplayNames.from_dict(names.to_dict()) == names
