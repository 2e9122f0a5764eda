# agiqa: the index of the workflow. Logic lives in src/agiqa, rules in workflow/rules.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default applies only when no --configfile is given: Snakemake would otherwise
# deep-merge it with e.g. config/paper.yaml and leak the synthetic dataset into the paper grid.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/describe.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/cross_dataset.smk"
include: "workflow/rules/external.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
