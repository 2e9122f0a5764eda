rule synthesize:
    output:
        f"{LAYOUT.synthetic_root('{dataset}')}/data.csv",
    log:
        "logs/synthesize/{dataset}.log",
    wildcard_constraints:
        dataset=one_of(SYNTHETIC),
    params:
        out=lambda wc: LAYOUT.synthetic_root(wc.dataset),
        options=lambda wc: config["datasets"][wc.dataset]["synthesize"],
    shell:
        "agiqa synthesize --out {params.out} --n-prompts {params.options[n_prompts]}"
        " --images-per-prompt {params.options[images_per_prompt]}"
        " --image-size {params.options[image_size]} --seed {params.options[seed]} > {log} 2>&1"


# Reads the metadata and decodes every image once; a bad file stops the pipeline here.
rule verify_dataset:
    input:
        dataset_source,
        downloaded_dataset,
    output:
        LAYOUT.verified("{dataset}"),
    log:
        "logs/verify/{dataset}.log",
    params:
        reader=lambda wc: reader_of(wc.dataset),
        root=lambda wc: root_of(wc.dataset),
    shell:
        "agiqa datasets check {wildcards.dataset} --reader {params.reader} --root {params.root}"
        " --out {output} > {log} 2>&1"


rule manifest:
    input:
        LAYOUT.verified("{dataset}"),
    output:
        csv=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
    log:
        "logs/manifest/{dataset}.log",
    params:
        reader=lambda wc: reader_of(wc.dataset),
        root=lambda wc: root_of(wc.dataset),
    shell:
        "agiqa manifest {wildcards.dataset} --reader {params.reader} --root {params.root}"
        " --out {output.csv} > {log} 2>&1"


rule split:
    input:
        LAYOUT.manifest("{dataset}"),
    output:
        LAYOUT.splits("{protocol}", "{dataset}"),
    log:
        "logs/split/{protocol}/{dataset}.log",
    params:
        flags=protocol_flags,
    shell:
        "agiqa split --manifest {input} --out {output} {params.flags} > {log} 2>&1"
