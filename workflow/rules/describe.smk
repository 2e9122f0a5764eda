# VLM descriptions: one job per (dataset, describer) writes image -> description.
# The request cache (resources/vlm_cache) is deliberately not an output: Snakemake would delete
# it before a rerun. Retries happen inside the job (backoff, Retry-After), not via `retries:`.
from agiqa.describe.workflow import (
    describe_api_slots,
    describe_envvars,
    describe_gpus,
    describe_params,
    description_path,
)


# API keys are read from the environment inside the job, never passed through params.
envvars:
    *describe_envvars(config),


rule describe:
    input:
        manifest=LAYOUT.manifest("{dataset}"),
        meta=LAYOUT.manifest("{dataset}").replace(".csv", ".json"),
    output:
        description_path("{dataset}", "{describer}", LAYOUT.results),
    log:
        f"{LAYOUT.logs}/describe/{{dataset}}/{{describer}}.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/describe/{{dataset}}/{{describer}}.tsv"
    wildcard_constraints:
        describer=one_of(config.get("describers") or {}),
    resources:
        vlm_api=lambda wc: describe_api_slots(config, wc.describer),
        gpu=lambda wc: describe_gpus(config, wc.describer),
    params:
        describer=lambda wc: describe_params(config, wc.describer),
        root=lambda wc: root_of(wc.dataset),
        reader=lambda wc: reader_of(wc.dataset),
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/describe.py"
