# One job per (protocol, dataset, model, split): a pure function of its inputs.
rule train_fold:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
        splits=LAYOUT.splits("{protocol}", "{dataset}"),
        descriptions=descriptions_input,
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
    threads: 4
    resources:
        gpu=gpus_for,
    script:
        "../scripts/train_fold.py"
