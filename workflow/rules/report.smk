# The single writer of the shared stores (MLflow database, tables). `report` holds the settings
# that change the numbers (logistic, significance test, resamples), so editing them reruns this
# job only, never a training job.
rule aggregate:
    input:
        [f"{run}/{name}" for run in run_dirs() for name in RUN_FILES if name != "checkpoint.pt"],
    output:
        tables=[
            report(
                f"{LAYOUT.tables_dir()}/{name}",
                caption=f"../report/{caption}",
                category="Results",
            )
            for name, caption in (("main.md", "tables.rst"), ("val.md", "val.rst"))
        ],
    log:
        f"{LAYOUT.logs}/aggregate.log",
    localrule: True
    params:
        runs=run_dirs(),
        tables=LAYOUT.tables_dir(),
        db=config["mlflow"]["db"],
        experiment=config["mlflow"].get("experiment") or EXPERIMENT,
        report=config["report"],
    script:
        "../scripts/aggregate.py"
