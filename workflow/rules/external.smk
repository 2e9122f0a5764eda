# Split files as a public format, and models agiqa does not train (config `external:`): their
# predictions on the split files, checked against the protocol, become run folders beside the
# trained ones, so the aggregation puts them in every table, figure and the paper.

from agiqa.data.split_info import info_path

#: name -> {display_name, predictions: {protocol: {dataset: file}}} (config `external:`).
EXTERNAL = config.get("external") or {}


wildcard_constraints:
    external=one_of(EXTERNAL),


def split_info_path(protocol, dataset):
    return str(info_path(LAYOUT.splits(protocol, dataset)))


def split_info_files():
    return [split_info_path(p, d) for p in config["protocols"] for d in DATASETS]


def external_dir(protocol, dataset, name):
    return f"{LAYOUT.results}/external/{protocol}/{dataset}/{name}"


def external_predictions(name, protocol, dataset):
    return EXTERNAL[name]["predictions"][protocol][dataset]


def external_jobs():
    """(protocol, dataset, name) of every predictions file the config's `external:` names."""
    return [
        (protocol, dataset, name)
        for name, entry in EXTERNAL.items()
        for protocol, files in entry["predictions"].items()
        for dataset in files
    ]


def external_dirs():
    return [external_dir(*job) for job in external_jobs()]


def external_run_dirs():
    """The imported run folders, one per split (what the aggregation reads)."""
    return [
        f"{external_dir(protocol, dataset, name)}/split{k}"
        for protocol, dataset, name in external_jobs()
        for k in range(protocol_of(config, protocol).n_splits)
    ]


# Every run leaves its split files described (<dataset>.json), ready for `agiqa evaluate`.
_outputs_before_split_info = final_outputs


def final_outputs():
    return _outputs_before_split_info() + split_info_files()


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
    script:
        "../scripts/import_external.py"
