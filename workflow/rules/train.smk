# One job per (protocol, dataset, model, split): a pure function of its inputs.
rule train_fold:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
        splits=LAYOUT.splits("{protocol}", "{dataset}"),
        descriptions=descriptions_input,
        backbone=stand_in_weights,
    output:
        multiext(
            LAYOUT.run_dir("{protocol}", "{dataset}", "{model}", "{split}") + "/",
            "predictions.csv",
            "metrics.json",
            "history.csv",
            "config.yaml",
            "checkpoint.pt",
        ),
    log:
        "logs/train/{protocol}/{dataset}/{model}/split{split}.log",
    benchmark:
        "benchmarks/train/{protocol}/{dataset}/{model}/split{split}.tsv"
    threads: config.get("train_threads", 4)
    resources:
        gpu=gpus_for,
    script:
        "../scripts/train_fold.py"


# Stand-in backbone weights (config pretrained_backbones): tiny models pretrained on separate
# synthetic data, so methods that start from pretrained backbones have one offline.
rule pretrain_backbone:
    output:
        LAYOUT.backbone("{backbone}"),
    log:
        "logs/pretrain/{backbone}.log",
    wildcard_constraints:
        backbone=one_of(STAND_INS),
    threads: 2
    script:
        "../scripts/pretrain_backbone.py"
