# Split files as a public format, and models agiqa does not train (config `external:`): their
# predictions on the split files, checked against the protocol, become run folders beside the
# trained ones, so the aggregation puts them in every table, figure and the paper.

wildcard_constraints:
    external=one_of(EXTERNAL),


# <dataset>.json beside each split file: protocol, sha256, ground truth (agiqa.data.split_info).
# A rule of its own, so an existing split file (and every run on it) is never rewritten.
rule split_info:
    input:
        splits=LAYOUT.splits("{protocol}", "{dataset}"),
        manifest=LAYOUT.manifest("{dataset}"),
    output:
        split_info_path("{protocol}", "{dataset}"),
    log:
        f"{LAYOUT.logs}/split_info/{{protocol}}/{{dataset}}.log",
    localrule: True
    params:
        protocol=lambda wc: protocol_of(config, wc.protocol).settings(),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/split_info.py"


# `snakemake splits`: every split file and its description, nothing trained.
rule splits:
    input:
        [LAYOUT.splits(p, d) for p in config["protocols"] for d in DATASETS],
        split_info_files(),


rule import_external:
    input:
        predictions=lambda wc: external_predictions(wc.external, wc.protocol, wc.dataset),
        splits=LAYOUT.splits("{protocol}", "{dataset}"),
        manifest=LAYOUT.manifest("{dataset}"),
    output:
        directory(external_dir("{protocol}", "{dataset}", "{external}")),
    log:
        f"{LAYOUT.logs}/external/{{protocol}}/{{dataset}}/{{external}}.log",
    localrule: True
    params:
        protocol=lambda wc: protocol_of(config, wc.protocol).settings(),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/import_external.py"
