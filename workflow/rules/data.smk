# Dataset -> verified summary -> manifest -> split files. Config values reach the steps as
# Python arguments (script:), never through a shell string.


wildcard_constraints:
    synthetic_root=one_of(SYNTHETIC_ROOTS),


rule synthesize:
    output:
        "{synthetic_root}/data.csv",
    log:
        f"{LAYOUT.logs}/synthesize/{{synthetic_root}}.log",
    params:
        out=lambda wc: wc.synthetic_root,
        options=lambda wc: config["datasets"][SYNTHETIC_ROOTS[wc.synthetic_root]]["synthesize"],
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/synthesize.py"


# Reads the metadata and decodes every image once; a bad file stops the pipeline here.
rule verify_dataset:
    input:
        dataset_source,
    output:
        LAYOUT.verified("{dataset}"),
    log:
        f"{LAYOUT.logs}/verify/{{dataset}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/verify/{{dataset}}.tsv"
    params:
        reader=lambda wc: reader_of(wc.dataset),
        root=lambda wc: root_of(wc.dataset),
        options=lambda wc: reader_options(config, wc.dataset),
        max_images=lambda wc: config["datasets"][wc.dataset].get("max_images"),
        allowed_link_roots=lambda wc: config["datasets"][wc.dataset].get("allowed_link_roots", []),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/verify_dataset.py"


rule manifest:
    input:
        LAYOUT.verified("{dataset}"),
    output:
        csv=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
    log:
        f"{LAYOUT.logs}/manifest/{{dataset}}.log",
    params:
        reader=lambda wc: reader_of(wc.dataset),
        root=lambda wc: root_of(wc.dataset),
        options=lambda wc: reader_options(config, wc.dataset),
        max_images=lambda wc: config["datasets"][wc.dataset].get("max_images"),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/manifest.py"


rule split:
    input:
        LAYOUT.manifest("{dataset}"),
    output:
        LAYOUT.splits("{protocol}", "{dataset}"),
    log:
        f"{LAYOUT.logs}/split/{{protocol}}/{{dataset}}.log",
    params:
        protocol=lambda wc: protocol_of(config, wc.protocol).settings(),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/split.py"
