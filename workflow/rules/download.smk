# Data acquisition and versioning. Real (non-synthetic) datasets are downloaded into
# data/raw/<name> (roots must be data/raw/<name>), verified by verify_dataset, then recorded in
# DVC by one serial job. The marker is the output, never the tree or a .dvc file: Snakemake deletes
# outputs before a rerun, which would delete a pointer or a whole dataset.

REAL_DATASETS = [d for d in DATASETS if d not in SYNTHETIC]


def download_marker(dataset):
    return f"data/raw/{dataset}/.agiqa-download.json"


def download_flags(wildcards):
    """--source / --url / --sha256 from the dataset's config entry (download: {url, sha256})."""
    entry = config["datasets"][wildcards.dataset]
    pinned = entry.get("download") or {}
    flags = [f"--source {entry['reader']}"]
    flags += [f"--{key} {pinned[key]}" for key in ("url", "sha256") if pinned.get(key)]
    return " ".join(flags)


# Manual hosts (Baidu, Quark, Terabox) fail here with instructions: where to fetch the archive
# and where to put it; the next run verifies and extracts it.
rule download_dataset:
    output:
        download_marker("{dataset}"),
    log:
        "logs/download/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(REAL_DATASETS),
    localrule: True
    retries: 2
    params:
        root=lambda wc: root_of(wc.dataset),
        flags=download_flags,
    shell:
        "agiqa datasets download {wildcards.dataset} --root {params.root} {params.flags}"
        " 2>&1 | tee {log}"


# DVC locks the repository: one serial job (dvc=1), after every dataset is verified.
rule dvc_track:
    input:
        [LAYOUT.verified(d) for d in REAL_DATASETS],
    output:
        "results/dvc/tracked.json",
    log:
        "logs/dvc/track.log",
    localrule: True
    resources:
        dvc=1,
    params:
        configfiles=" ".join(f"--configfile {f}" for f in workflow.overwrite_configfiles),
    shell:
        "python -m agiqa.data.dvc track --path data {params.configfiles} --out {output} > {log} 2>&1"
