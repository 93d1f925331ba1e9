"""The demo page under load: several `gradio_client` users grading at once against a `dr-hf demo`
server on this machine (loopback only), good photographs mixed with bad uploads.

The server runs as its own process (`dr-hf demo`), with its temporary files under a folder made
for the run, so that its memory (resident set size, from /proc) and what it leaves behind can be
measured from outside. Every user loops until the time is up, then stops; the server is then
stopped with SIGTERM, as a service manager would. Answers are sorted into graded, handled errors
(a bad upload answered with a message on the page), "queue full" refusals and failures (anything
else: an exception, a hang past the timeout).
"""

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.archive import memory_kib, untrained_model

ANSWER_TIMEOUT = 120  # seconds a single request may take before it counts as a failure


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bad_uploads(folder: Path, good: Path) -> list[Path]:
    """Files a user may upload by mistake: empty, not an image, cut short."""
    folder.mkdir(parents=True, exist_ok=True)
    empty, text, cut = folder / "empty.jpg", folder / "notes.jpg", folder / "cut.png"
    empty.write_bytes(b"")
    text.write_text("patient notes, not a photograph\n" * 20)
    content = good.read_bytes()
    cut.write_bytes(content[: len(content) // 2])
    return [empty, text, cut]


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dr-hf demo exited with {process.returncode} before serving")
        try:
            Client(url, verbose=False)
            return
        except Exception:  # not serving yet
            time.sleep(1)
    raise TimeoutError(f"dr-hf demo did not serve {url} within {timeout} s")


def _user(
    url: str,
    files: list[Path],
    bad: set[Path],
    until: float,
    seed: int,
    out: list,
    min_requests: int = 0,
) -> None:
    """Grade the files in a shuffled cycle until `until`, and at least `min_requests` times."""
    from gradio_client import Client, handle_file

    order = list(files)
    random.Random(seed).shuffle(order)
    client = Client(url, verbose=False)
    done = 0
    while time.monotonic() < until or done < min_requests:
        path = order[done % len(order)]
        done += 1
        start, name = time.monotonic(), path.name
        try:
            job = client.submit(handle_file(str(path)), api_name="/grade_photo")
            summary = job.result(timeout=ANSWER_TIMEOUT)[0]
            kind = "handled_error" if path in bad else "graded"
            if path not in bad and "dr-grade" not in summary:
                kind, name = "failure", f"{path.name}: no grade in {summary[:300]!r}"
        except Exception as error:  # the client raises what the server answered
            kind = "queue_full" if "queue is full" in str(error).lower() else "failure"
            name = f"{path.name}: {type(error).__name__}: {str(error)[:300]}"
        out.append((kind, time.monotonic() - start, name))


def run_demo_load(
    model: str | Path,
    photos: list[Path],
    users: int = 6,
    seconds: float = 60.0,
    bad_share: float = 0.25,
    work_dir: str | Path | None = None,
    min_requests: int = 0,
) -> dict:
    """Serve `model` with `dr-hf demo`, let `users` grade `photos` (and bad uploads, about
    `bad_share` of the requests) for `seconds` and at least `min_requests` requests each (a
    slow machine still sends every kind of upload), stop the server; return the figures."""
    work = Path(work_dir or tempfile.mkdtemp(prefix="dr_hf_load_"))
    server_tmp = work / "server_tmp"
    server_tmp.mkdir(parents=True, exist_ok=True)
    bad = bad_uploads(work / "bad", photos[0])
    weight = max(1, round(len(photos) * bad_share / max(1e-9, 1 - bad_share)))
    files = list(photos) + bad * max(1, weight // len(bad))
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "TMPDIR": str(server_tmp), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    command = [sys.executable, "-m", "dr_hf.cli", "demo", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    # The server's output goes to a file: a pipe read only at the end fills (64 KiB of warnings
    # about bad uploads) and then blocks the server in mid-answer.
    log_path = work / "server.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        _wait_for(url, server)
        warm: list = []
        _user(url, list(photos), set(), time.monotonic() + 3, 0, warm)  # model and caches warm
        rss_before = memory_kib(server.pid)[0] / 1024
        results: list = []
        until = time.monotonic() + seconds
        threads = [
            threading.Thread(
                target=_user, args=(url, files, set(bad), until, seed, results, min_requests)
            )
            for seed in range(1, users + 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=seconds + (min_requests + 1) * ANSWER_TIMEOUT)
        rss_after = memory_kib(server.pid)[0] / 1024
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    log = log_path.read_text(errors="replace")
    # Files only: Gradio makes an empty gradio/vibe_edit_history folder in the system temporary
    # folder on every launch, whatever the app.
    left = sorted(
        p.relative_to(server_tmp).as_posix() for p in server_tmp.rglob("*") if p.is_file()
    )
    latencies = np.array([seconds for kind, seconds, _ in results if kind != "failure"])
    kinds = ("graded", "handled_error", "queue_full", "failure")
    counts = {kind: sum(1 for k, *_ in results if k == kind) for kind in kinds}
    return {
        "users": users,
        "seconds": seconds,
        "requests": len(results),
        **counts,
        "failures": [name for kind, _, name in results if kind == "failure"][:10],
        "requests_per_second": len(results) / seconds,
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies.size else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies.size else None,
        "server_rss_before_mib": round(rss_before, 1),
        "server_rss_after_mib": round(rss_after, 1),
        "server_exit_code": server.returncode,
        "temporary_files_left": left,
        "server_temporary_folders_left": sorted(
            p.relative_to(server_tmp).as_posix() for p in server_tmp.rglob("*") if p.is_dir()
        ),
        "server_log_tail": log[-2000:] if counts["failure"] else "",
    }


def bench_demo_load(
    cache_dir: str | Path,
    model: str | Path | None = None,
    users: int = 6,
    seconds: float = 60.0,
    num_photos: int = 8,
    image_size: int = 160,
) -> dict:
    """`run_demo_load` on `model` (a trained folder; None: an untrained test_resnet saved with
    its processor, for smoke runs) with `num_photos` synthetic photographs."""
    from dr_hf.data.synthetic import make_synthetic

    cache_dir = Path(cache_dir)
    if model is None:
        model = untrained_model(cache_dir / "demo_load_model")
    elif not Path(model).is_dir():
        raise FileNotFoundError(
            f"{model} is not a trained model folder: run the quick start first "
            "(dr-hf train --config configs/quickstart.yaml) or pass --pointing-model."
        )
    folder = make_synthetic(
        cache_dir / f"demo_load_{num_photos}_{image_size}",
        num_images=num_photos,
        image_size=image_size,
        seed=3,
        overwrite=True,
    )
    photos = sorted((folder / "train_images").glob("*.png"))
    work = Path(tempfile.mkdtemp(prefix="dr_hf_load_", dir=cache_dir))
    return {"model": str(model)} | run_demo_load(model, photos, users, seconds, work_dir=work)
