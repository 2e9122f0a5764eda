"""Thin adapter: the pretrain_backbone rule -> agiqa.train.stand_in.pretrain_stand_in."""

import logging
from pathlib import Path

from agiqa.logs import configure_logging
from agiqa.train.stand_in import pretrain_stand_in

snakemake = globals()["snakemake"]
configure_logging(snakemake.log[0])
name = snakemake.wildcards.backbone
out = Path(snakemake.output[0])
try:
    entry = snakemake.config["pretrained_backbones"][name]
    loss = pretrain_stand_in(entry, out)
    logging.getLogger("agiqa.train").info("wrote %s (last batch loss %.4f)", out, loss)
except Exception:
    logging.getLogger("agiqa.train").exception("stand-in pretraining failed")
    raise
