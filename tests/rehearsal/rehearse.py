"""`make rehearse`: the paper run of config/paper.yaml, end to end, with the internet replaced.

Run as ``python tests/rehearsal/rehearse.py [--workspace DIR] [--cores N]`` from a checkout with
``../shared`` beside it. In a workspace (default ``results/rehearsal``, git-ignored) it:

1. snapshots the checkout (tracked and untracked, non-ignored files) into a fresh git
   repository, ``repo/``: the repository itself, with its own .gitignore, .dvcignore and .dvc/;
2. lays out the four datasets in their official layouts under ``repo/data/raw/<name>``
   (tests/rehearsal/datasets.py: the real AGIQA-3K, the others rebuilt from their real metadata);
3. builds a local model hub (tests/rehearsal/hub.py), serves it on 127.0.0.1 and runs
   ``agiqa weights fetch --configfile config/paper.yaml`` against it (``HF_ENDPOINT``; the
   torchvision file goes into ``TORCH_HOME``'s hub cache), then stops it;
4. runs ``snakemake all paper`` on config/paper.yaml plus config/paper-rehearsal.yaml (amounts
   and locations only; checked by tests/rehearsal/overlay.py) and an endpoints overlay naming
   the local mirror of the published descriptions, with no network: every Python process
   refuses to connect anywhere but that mirror (tests/rehearsal/offline/sitecustomize.py);
5. runs the describe stage (``agiqa describe``, the rule's own ``run_job``) with the paper's
   commented-out OpenAI-compatible describer against a local server
   (agiqa.describe.fake_server);
6. checks the outputs: every grid cell trained and tested, every protocol, the cross-dataset
   pairs, tables, MLflow runs, the paper PDF, commits recorded without ``-dirty``, and every
   model job's peak RSS within the ``mem_mb`` its rule reserved;
7. commits the staged DVC pointers, pushes the data (``agiqa.data.dvc push``, what ``make
   data-push`` runs), clones the repository afresh, pulls (``make data-pull``'s command),
   rebuilds the manifests there and requires them byte-identical; ``git status`` must be clean
   in the repository, the clone and the checkout;
8. prints the wall time and per-job time and peak memory (Snakemake's benchmark files) and writes
   them to ``summary.md`` / ``summary.json`` in the workspace.

``--gpu`` runs the GPU variant instead (``make bench-gpu`` runs it after the campaign): the same
snapshot, hub and fetch, then split 0 of kfold_grouped for ``GPU_MODELS`` on AGIQA-1K in its
official layout (256 images from the real metadata) with config/paper-rehearsal-gpu.yaml:
``device: cuda``, the paper's batch sizes and mixed precision, one epoch. It needs the metadata
fixtures only (``--shared``), and writes each job's seconds and images/s to ``summary.md``.

Exit status 0 when everything holds, 1 with the failed check otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parents[1]
CHECKOUT = TESTS.parent
sys.path.insert(0, str(TESTS))

from rehearsal import checks, datasets, hub, overlay, servers, summary  # noqa: E402

PAPER = "config/paper.yaml"
OVERLAY = "config/paper-rehearsal.yaml"
GPU_OVERLAY = "config/paper-rehearsal-gpu.yaml"
#: The GPU variant's models: every kind of fetched weights (open_clip ViT-L/14 and ViT-B/32, the
#: ImageReward BLIP with bert-base-uncased and timm's ViT-B/16, torchvision's ResNet-50, both
#: Qwen2.5-VL checkpoints), one fold job each.
GPU_MODELS = ("clip_residual", "dcmpln", "scva", "resnet50_probe", "deqa", "deqa_3b")
GPU_DATASET = "agiqa-1k"
GIT = ["git", "-c", "user.name=agiqa rehearsal", "-c", "user.email=rehearsal@localhost"]
#: The paper's commented-out describer (config/paper.yaml), pointed at the local server.
OPENAI_DESCRIBER = {
    "backend": "openai",
    "model": "doubao-1-5-vision-pro-32k-250115",
    "template": "content_first",
    "api_key_env": "ARK_API_KEY",
    "temperature": 0.0,
    "seed": 0,
    "concurrency": 8,
    "rpm": 600,
    "budget_tokens": 5000000,
}


class Rehearsal:
    def __init__(self, workspace: Path, shared: Path, cores: int) -> None:
        self.workspace = workspace.resolve()
        self.shared = shared.resolve()
        self.cores = cores
        self.repo = self.workspace / "repo"
        self.clone = self.workspace / "clone"
        self.timings: dict[str, float] = {}
        self.started = time.monotonic()
        self.env = self.base_env()

    # --- helpers ---------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = dict(os.environ)
        env.update(
            {
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join(
                    [str(TESTS / "rehearsal" / "offline"), str(self.repo / "src")]
                ),
                "HF_HOME": str(self.workspace / "hf-home"),
                "TORCH_HOME": str(self.workspace / "torch-home"),
                "DVC_NO_ANALYTICS": "1",
                "AGIQA_REHEARSAL_OFFLINE": "1",
                "AGIQA_REHEARSAL_ALLOW": "",
                "ARK_API_KEY": "rehearsal-key-not-a-secret",
            }
        )
        return env

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        yield
        self.timings[name] = time.monotonic() - started
        print(f"   {name}: {self.timings[name]:.0f} s", flush=True)

    def run(self, *args: str, cwd: Path | None = None, **env: str) -> str:
        done = subprocess.run(
            args,
            cwd=cwd or self.repo,
            env=self.env | env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-6000:]
            raise checks.RehearsalFailed(f"`{' '.join(args)}` failed ({done.returncode}):\n{tail}")
        return done.stdout

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*GIT, *args, cwd=cwd)

    # --- the steps -------------------------------------------------------------------------

    def snapshot(self) -> None:
        """A fresh repository holding the checkout's files (tracked, and untracked not ignored)."""
        for path in (self.repo, self.clone, self.workspace / "agiqa-dvc-remote"):
            shutil.rmtree(path, ignore_errors=True)
        self.repo.mkdir(parents=True)
        self.copy_checkout()
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git(
            "commit",
            "-q",
            "-m",
            f"rehearsal snapshot of {self.checkout_head()} and its working tree",
        )

    def refresh(self) -> None:
        """``--resume``: the checkout's changed files into the existing snapshot, committed, so
        that a fix continues the run where it stopped (finished jobs are not rerun)."""
        if not (self.repo / ".git").is_dir():
            raise checks.RehearsalFailed(f"--resume: no rehearsal repository at {self.repo}")
        changed = self.copy_checkout()
        if changed:
            # Only the copied files: the DVC pointers `dvc_track` staged stay staged for step 7.
            message = f"rehearsal resumed at {self.checkout_head()} and its working tree"
            self.git("add", "--", *changed)
            self.git("commit", "-q", "-m", message, "--only", "--", *changed)

    def copy_checkout(self) -> list[str]:
        """Copies the checkout's regular files (tracked, and untracked not ignored) that the
        repository lacks or holds with other bytes; returns their names."""
        listed = self.run(
            "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=CHECKOUT
        )
        changed = []
        for name in filter(None, listed.split("\0")):
            source, target = CHECKOUT / name, self.repo / name
            if not source.is_file() or source.is_symlink():
                continue
            if not target.is_file() or target.read_bytes() != source.read_bytes():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                changed.append(name)
        return changed

    def checkout_head(self) -> str:
        return self.run("git", "rev-parse", "--short", "HEAD", cwd=CHECKOUT).strip()

    def config(self) -> tuple[dict, dict]:
        paper = yaml.safe_load((self.repo / PAPER).read_text())
        return paper, yaml.safe_load((self.repo / OVERLAY).read_text())

    def build_datasets(self) -> None:
        paper, rehearsal = self.config()
        merged = overlay.merged(paper, rehearsal)
        limits = {name: entry.get("max_images") for name, entry in merged["datasets"].items()}
        datasets.build_all(self.repo / "data" / "raw", self.shared, limits)

    def build_gpu_dataset(self) -> int:
        """AGIQA-1K's official layout with the GPU overlay's images; returns their number."""
        paper = yaml.safe_load((self.repo / PAPER).read_text())
        gpu = yaml.safe_load((self.repo / GPU_OVERLAY).read_text())
        limit = overlay.merged(paper, gpu)["datasets"][GPU_DATASET]["max_images"]
        fixtures = self.shared / "fixtures" / "agiqa-metadata"
        datasets.build_agiqa1k(self.repo / "data" / "raw" / GPU_DATASET, fixtures, limit)
        return int(limit)

    def fetch_weights(self) -> None:
        corpus = datasets.prompts(self.shared / "fixtures" / "agiqa-metadata")
        hub.build_hub(self.workspace / "hub", corpus)
        hub.seed_torchvision(Path(self.env["TORCH_HOME"]))
        with hub.serve(self.workspace / "hub") as (endpoint, requests):
            self.env["HF_ENDPOINT"] = endpoint
            address = endpoint.removeprefix("http://")
            out = self.run(
                "agiqa", "weights", "fetch", "--configfile", PAPER, AGIQA_REHEARSAL_ALLOW=address
            )
        print(out, end="")
        checks.every_need_fetched(out, yaml.safe_load((self.repo / PAPER).read_text()))
        print(f"   the hub answered {len(requests)} requests", flush=True)
        # The hub is down now: a job that still reached for it would be refused by the guard.

    def pipeline(self, mirror: str) -> None:
        endpoints = self.workspace / "endpoints.yaml"
        document = {"describers": {"published": {"base_url": mirror}}}
        endpoints.write_text(yaml.safe_dump(document))
        paper, rehearsal = self.config()
        overlay.check(paper, rehearsal, document)
        address = mirror.removeprefix("http://").split("/", 1)[0]
        log = self.workspace / "snakemake.log"
        started = time.monotonic()
        args = [
            "snakemake",
            "all",
            "paper",
            "--cores",
            str(self.cores),
            "--resources",
            f"mem_mb={memory_budget_mb()}",
            "--configfile",
            PAPER,
            OVERLAY,
            str(endpoints),
        ]
        with log.open("w") as handle:
            done = subprocess.run(
                args,
                cwd=self.repo,
                env=self.env | {"AGIQA_REHEARSAL_ALLOW": address},
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        self.timings["snakemake (wall)"] = time.monotonic() - started
        if done.returncode != 0:
            tail = log.read_text()[-8000:]
            raise checks.RehearsalFailed(f"the paper run failed (full log: {log}):\n{tail}")

    def gpu_jobs(self, mirror: str) -> list[str]:
        """Split 0 of kfold_grouped for each GPU model on AGIQA-1K, on CUDA; the run folders."""
        endpoints = self.workspace / "endpoints.yaml"
        document = {"describers": {"published": {"base_url": mirror}}}
        endpoints.write_text(yaml.safe_dump(document))
        paper = yaml.safe_load((self.repo / PAPER).read_text())
        overlay.check(paper, yaml.safe_load((self.repo / GPU_OVERLAY).read_text()), document)
        runs = [f"results/paper/runs/kfold_grouped/{GPU_DATASET}/{m}/split0" for m in GPU_MODELS]
        address = mirror.removeprefix("http://").split("/", 1)[0]
        self.run(
            "snakemake", *(f"{run}/metrics.json" for run in runs), "--cores", str(self.cores),
            "--resources", "gpu=1", "--configfile", PAPER, GPU_OVERLAY, str(endpoints),
            AGIQA_REHEARSAL_ALLOW=address,
        )  # fmt: skip
        return runs

    def describe_openai(self) -> None:
        with servers_openai() as (base_url, server):
            address = base_url.removeprefix("http://").split("/", 1)[0]
            config = self.workspace / "describer-openai.yaml"
            config.write_text(yaml.safe_dump({**OPENAI_DESCRIBER, "base_url": base_url}))
            for name in datasets.DATASETS:
                out = f"results/paper/descriptions/{name}/openai-rehearsal.csv"
                self.run(
                    "agiqa", "describe", "--dataset", name, "--config", str(config),
                    "--manifest", f"results/paper/manifests/{name}.csv",
                    "--root", f"data/raw/{name}", "--out", out,
                    AGIQA_REHEARSAL_ALLOW=address,
                )  # fmt: skip
                checks.descriptions_complete(self.repo / out, self.repo, name)
            print(f"   the OpenAI-compatible server answered {server.calls} requests")

    def dvc_round_trip(self) -> None:
        staged = self.run("git", "diff", "--cached", "--name-only").split()
        checks.pointers_staged(staged, datasets.DATASETS)
        self.git("commit", "-q", "-m", "data: DVC pointers of the four datasets (dvc_track)")
        data_config = ["--configfile", PAPER, "--configfile", OVERLAY]
        self.run(sys.executable, "-m", "agiqa.data.dvc", "push", *data_config)
        checks.clean(self.git("status", "--porcelain", "--untracked-files=all"), "the repository")
        self.git("clone", "-q", str(self.repo), str(self.clone), cwd=self.workspace)
        self.run(sys.executable, "-m", "agiqa.data.dvc", "pull", *data_config, cwd=self.clone)
        endpoints = str(self.workspace / "endpoints.yaml")
        manifests = [f"results/paper/manifests/{name}.csv" for name in datasets.DATASETS]
        self.run(
            "snakemake", *manifests, "--cores", str(self.cores),
            "--configfile", PAPER, OVERLAY, endpoints, cwd=self.clone,
        )  # fmt: skip
        checks.same_files(self.repo, self.clone, manifests)
        status = self.git("status", "--porcelain", "--untracked-files=all", cwd=self.clone)
        checks.clean(status, "the fresh clone after `dvc pull`")
        dry = self.run("snakemake", "-n", "all", "paper", "--configfile", PAPER, OVERLAY, endpoints)
        checks.nothing_to_do(dry)


def memory_budget_mb() -> int:
    """``--resources mem_mb``: 80% of the memory available now, so that the rules' ``mem_mb``
    (agiqa.resources: SCVA's CPU jobs peak near 10 GB) keep jobs from starting side by side
    beyond it."""
    import psutil

    return int(psutil.virtual_memory().available / 2**20 * 0.8)


@contextlib.contextmanager
def servers_openai() -> Iterator[tuple[str, object]]:
    from agiqa.describe.fake_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server.base_url, server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--shared", type=Path, default=CHECKOUT.parent / "shared")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="the GPU variant (make bench-gpu)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue a stopped rehearsal in its workspace with the checkout's current files",
    )
    args = parser.parse_args(argv)
    needed = "fixtures/agiqa-metadata" if args.gpu else "datasets/agiqa-3k"
    if not (args.shared / needed).is_dir():
        print(f"error: {args.shared}/{needed} is missing (../shared)", file=sys.stderr)
        return 1
    default = "rehearsal-gpu" if args.gpu else "rehearsal"
    workspace = args.workspace or CHECKOUT / "results" / default
    if args.gpu:
        return gpu_variant(Rehearsal(workspace, args.shared, args.cores))
    status_before = subprocess.run(
        ["git", "status", "--porcelain"], cwd=CHECKOUT, capture_output=True, text=True
    ).stdout
    rehearsal = Rehearsal(workspace, args.shared, args.cores)
    try:
        if args.resume:
            with rehearsal.step("the checkout's changes into the stopped rehearsal"):
                rehearsal.refresh()
        else:
            with rehearsal.step("snapshot of the checkout"):
                rehearsal.snapshot()
            with rehearsal.step("datasets in their official layouts"):
                rehearsal.build_datasets()
            with rehearsal.step("weights: local hub -> agiqa weights fetch"):
                rehearsal.fetch_weights()
        fixtures = args.shared / "fixtures" / "agiqa-metadata"
        with (
            servers.published_mirror(rehearsal.workspace / "mirror", fixtures) as mirror,
            rehearsal.step("the paper run (snakemake all paper), offline"),
        ):
            rehearsal.pipeline(mirror)
        with rehearsal.step("describe stage against a local OpenAI-compatible server"):
            rehearsal.describe_openai()
        with rehearsal.step("checks of the outputs"):
            checks.outputs(rehearsal.repo)
            checks.memory_covered(rehearsal.repo, summary.benchmarks(rehearsal.repo))
        with rehearsal.step("DVC: commit, push, fresh clone, pull, same manifests"):
            rehearsal.dvc_round_trip()
        status_after = subprocess.run(
            ["git", "status", "--porcelain"], cwd=CHECKOUT, capture_output=True, text=True
        ).stdout
        checks.unchanged(status_before, status_after)
    except checks.RehearsalFailed as failure:
        print(f"REHEARSAL FAILED: {failure}", file=sys.stderr)
        return 1
    wall = time.monotonic() - rehearsal.started
    report = summary.write(rehearsal.repo, rehearsal.workspace, rehearsal.timings, wall)
    print(report)
    print(f"rehearsal passed: wall time {wall / 60:.1f} min on {args.cores} cores")
    return 0


def gpu_variant(rehearsal: Rehearsal) -> int:
    """Snapshot, AGIQA-1K, hub and fetch, then the GPU models' fold jobs; their speed."""
    try:
        with rehearsal.step("snapshot of the checkout"):
            rehearsal.snapshot()
        with rehearsal.step("AGIQA-1K in its official layout"):
            images = rehearsal.build_gpu_dataset()
        with rehearsal.step("weights: local hub -> agiqa weights fetch"):
            rehearsal.fetch_weights()
        fixtures = rehearsal.shared / "fixtures" / "agiqa-metadata"
        with (
            servers.published_mirror(rehearsal.workspace / "mirror", fixtures) as mirror,
            rehearsal.step(f"fold jobs of {len(GPU_MODELS)} models on CUDA, {images} images"),
        ):
            runs = rehearsal.gpu_jobs(mirror)
    except checks.RehearsalFailed as failure:
        print(f"GPU REHEARSAL FAILED: {failure}", file=sys.stderr)
        return 1
    wall = time.monotonic() - rehearsal.started
    print(summary.write_gpu(rehearsal.repo, runs, rehearsal.workspace, rehearsal.timings, wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
