# Cross-dataset generalisation (config `cross_dataset`, src/agiqa/cross_dataset.py): train on
# dataset A's whole labelled set, score every other dataset B with the checkpoint. Without the
# section no job here is asked for. `params` hold the resolved settings, as for train_fold, so
# an edited setting reruns exactly the affected jobs.


rule cross_split:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
    output:
        cross.split_path(LAYOUT, "{dataset}"),
    log:
        f"{LAYOUT.logs}/cross/{{dataset}}/split.log",
    localrule: True
    params:
        settings=lambda wc: cross.split_settings(config),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/cross_split.py"


rule cross_train:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
        splits=cross.split_path(LAYOUT, "{dataset}"),
        descriptions=descriptions_input,
        backbone=stand_in_weights,
        weights=packaged_weights_input,
    output:
        multiext(cross.train_dir(LAYOUT, "{dataset}", "{model}") + "/", *RUN_FILES),
    log:
        f"{LAYOUT.logs}/cross/{{dataset}}/{{model}}/train.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/cross/{{dataset}}/{{model}}/train.tsv"
    params:
        job=lambda wc: cross.fold_params(config, wc.dataset, wc.model),
    threads: config.get("train_threads", 4)
    resources:
        gpu=gpus_for,
        mem_mb=memory_for,
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/cross_train.py"


rule cross_predict:
    input:
        checkpoint=cross.checkpoint_path(LAYOUT, "{dataset}", "{model}"),
        manifest=LAYOUT.manifest("{test}"),
        meta=LAYOUT.manifest("{test}").replace(".csv", ".json"),
        descriptions=cross_descriptions_input,
    output:
        multiext(
            cross.predict_dir(LAYOUT, "{dataset}", "{model}", "{test}") + "/",
            *cross.PREDICT_FILES,
        ),
    log:
        f"{LAYOUT.logs}/cross/{{dataset}}/{{model}}/tested_on/{{test}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/cross/{{dataset}}/{{model}}/tested_on/{{test}}.tsv"
    wildcard_constraints:
        test=one_of(DATASETS),
    params:
        job=lambda wc: cross.predict_params(config, wc.dataset, wc.model, wc.test),
    threads: config.get("train_threads", 4)
    resources:
        gpu=gpus_for,
        mem_mb=memory_for,
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/cross_predict.py"
