"""Throughput of ``agiqa describe`` against a local endpoint with a fixed latency per request.

Renders a small synthetic dataset, starts the fake OpenAI-compatible server with ``--latency``
seconds per request, then runs the real ``agiqa describe`` command (a subprocess, empty cache
each time) once per concurrency level. Throughput is the job's own images/s (its summary), so
interpreter start-up is excluded; the command's wall time is printed too. The last line is the
speed-up of the highest concurrency over the lowest.

    python -m agiqa.describe.bench --images 96 --latency 0.2 --concurrency 1 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agiqa.describe.fake_server import FakeOpenAIServer

KEY_VARIABLE = "AGIQA_BENCH_API_KEY"


@dataclass(frozen=True)
class BenchResult:
    concurrency: int
    images: int
    images_per_second: float
    describe_s: float
    wall_s: float
    calls: int


def make_dataset(folder: Path, images: int) -> Path:
    """A synthetic dataset of ``images`` images in the AGIQA-3K layout."""
    from agiqa.data.synthetic import generate

    per_prompt = 4
    generate(folder, n_prompts=max(5, -(-images // per_prompt)), images_per_prompt=per_prompt)
    return folder


def run_once(
    server: FakeOpenAIServer, root: Path, work: Path, concurrency: int, images: int, key: str
) -> BenchResult:
    """One ``agiqa describe`` run with an empty cache; returns its measured throughput."""
    run_dir = work / f"c{concurrency}"
    summary = run_dir / "summary.json"
    command = [
        sys.executable,
        "-m",
        "agiqa.cli",
        "describe",
        "--dataset",
        "synthetic",
        "--reader",
        "agiqa-3k",
        "--root",
        str(root),
        "--backend",
        "openai",
        "--base-url",
        server.base_url,
        "--model",
        "bench-vlm",
        "--api-key-env",
        KEY_VARIABLE,
        "--concurrency",
        str(concurrency),
        "--limit",
        str(images),
        "--cache-dir",
        str(run_dir / "cache"),
        "--out",
        str(run_dir / "descriptions.csv"),
        "--summary-json",
        str(summary),
    ]
    calls_before = server.calls
    start = time.monotonic()
    done = subprocess.run(
        command,
        env={**os.environ, KEY_VARIABLE: key},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"agiqa describe failed ({done.returncode}):\n{done.stderr[-2000:]}")
    data = json.loads(summary.read_text())
    return BenchResult(
        concurrency,
        data["total"],
        data["images_per_second"],
        data["elapsed_s"],
        wall,
        server.calls - calls_before,
    )


def main(argv: list[str] | None = None) -> float:
    """Run the benchmark, print one line per run and the speed-up last; return the speed-up."""
    parser = argparse.ArgumentParser(description="agiqa describe throughput benchmark")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)
    key = "bench-" + os.urandom(8).hex()
    results = []
    with tempfile.TemporaryDirectory(prefix="agiqa-bench-") as tmp:
        work = Path(tmp)
        root = make_dataset(work / "dataset", args.images)
        with FakeOpenAIServer(api_key=key, latency=args.latency) as server:
            for concurrency in args.concurrency:
                result = run_once(server, root, work, concurrency, args.images, key)
                results.append(result)
                print(
                    f"concurrency {result.concurrency}: {result.images} images, "
                    f"{result.calls} requests, {result.describe_s:.2f} s -> "
                    f"{result.images_per_second:.2f} images/s "
                    f"(command wall time {result.wall_s:.2f} s)",
                    flush=True,
                )
    low, high = results[0], results[-1]
    speedup = high.images_per_second / low.images_per_second
    print(
        f"speed-up concurrency {high.concurrency} vs {low.concurrency} at "
        f"{args.latency * 1000:.0f} ms latency: {speedup:.2f}x"
    )
    return speedup


if __name__ == "__main__":
    main()
