"""The ``overall`` dimension kind: AIGIQA-20K's NTIRE score, own studies and the config schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from snakemake.utils import validate

from agiqa.data.manifest import DIMENSION_KINDS, Dimension
from agiqa.data.readers import read_dataset
from agiqa.data.readers.aigiqa20k import DIMENSION as AIGIQA20K
from agiqa.errors import ConfigError

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def test_overall_is_a_kind_and_aigiqa20k_uses_it() -> None:
    assert DIMENSION_KINDS == ("quality", "alignment", "overall")
    assert (AIGIQA20K.name, AIGIQA20K.kind, AIGIQA20K.low, AIGIQA20K.high) == (
        "overall",
        "overall",
        0.0,
        5.0,
    )
    with pytest.raises(ValueError, match="kind must be one of"):
        Dimension("x", "aesthetics", 0, 1)


def test_own_studies_may_rate_an_overall_score(tmp_path: Path) -> None:
    (tmp_path / "study.csv").write_text("image,prompt,score\na.png,a cube,3.5\n")
    dimensions = {"overall": {"column": "score", "kind": "overall", "low": 0, "high": 5}}
    manifest = read_dataset("csv", tmp_path, metadata="study.csv", dimensions=dimensions)
    assert [(d.name, d.kind) for d in manifest.dimensions] == [("overall", "overall")]
    with pytest.raises(ConfigError, match="kind must be one of"):
        bad = {"overall": {**dimensions["overall"], "kind": "mixed"}}
        read_dataset("csv", tmp_path, metadata="study.csv", dimensions=bad)


def test_the_schema_accepts_the_overall_kind() -> None:
    spec = {"column": "score", "kind": "overall", "low": 0, "high": 5}
    config = {
        "datasets": {"mine": {"reader": "csv", "root": "data/mine", "dimensions": {"o": spec}}},
        "protocols": {"kfold_grouped": {"type": "kfold_grouped"}},
        "models": {"m": {"type": "clip_zeroshot"}},
    }
    validate(config, str(SCHEMA))
    config["datasets"]["mine"]["dimensions"]["o"]["kind"] = "mixed"
    with pytest.raises(Exception, match="mixed"):
        validate(config, str(SCHEMA))
