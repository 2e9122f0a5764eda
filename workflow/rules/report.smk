# The single writer of the shared stores (MLflow database, tables).
rule aggregate:
    input:
        [f"{run}/{name}" for run in run_dirs() for name in ("metrics.json", "config.yaml")],
    output:
        tables=[
            report(
                f"{LAYOUT.tables_dir()}/{name}",
                caption="../report/tables.rst",
                category="Results",
            )
            for name in TABLE_FILES
        ],
    log:
        "logs/aggregate.log",
    localrule: True
    params:
        runs=run_dirs(),
        tables=LAYOUT.tables_dir(),
        db=config["mlflow"]["db"],
        experiment=config["mlflow"]["experiment"],
        precision=config["report"]["precision"],
    shell:
        "agiqa aggregate {params.runs} --tables {params.tables} --mlflow-db {params.db}"
        " --experiment {params.experiment} --precision {params.precision} > {log} 2>&1"
