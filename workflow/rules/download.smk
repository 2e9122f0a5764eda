# Data acquisition and versioning. A real dataset whose root is missing is downloaded into it
# (the marker <root>/.agiqa-download.json is the output, never the tree: Snakemake deletes outputs
# before a rerun); a root that already exists is the user's own folder and is used as is.
# DVC tracking is opt-in per dataset (`dvc: true`), done by one serial job.


wildcard_constraints:
    download_root=one_of(DOWNLOADED),


# Manual hosts (Baidu, Quark, Terabox) fail here with instructions: where to fetch the archive
# and where to put it; the next run verifies and extracts it.
rule download_dataset:
    output:
        f"{{download_root}}/{DOWNLOAD_MARKER}",
    log:
        f"{LAYOUT.logs}/download/{{download_root}}.log",
    localrule: True
    retries: 2
    params:
        dataset=lambda wc: DOWNLOADED[wc.download_root],
        source=lambda wc: reader_of(DOWNLOADED[wc.download_root]),
        download=lambda wc: config["datasets"][DOWNLOADED[wc.download_root]].get("download", {}),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/download_dataset.py"


# DVC locks the repository: one serial job (dvc=1), after every opted-in dataset is verified.
rule dvc_track:
    input:
        [LAYOUT.verified(d) for d in tracked_datasets()],
    output:
        f"{LAYOUT.results}/dvc/tracked.json",
    log:
        f"{LAYOUT.logs}/dvc/track.log",
    localrule: True
    resources:
        dvc=1,
    params:
        paths=[root_of(d) for d in tracked_datasets()],
        remote=lambda wc: {
            "name": "local",
            "url": "../agiqa-dvc-remote",
            **(config.get("dvc", {}).get("remote") or {}),
        },
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/dvc_track.py"
