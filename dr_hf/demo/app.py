"""The Gradio Blocks app of `dr-hf demo`, and `serve`, which launches it with safe defaults.

Two tabs: one photograph (upload or a built-in synthetic example; the grade and the rule that
decided it, the five probabilities (a regression model: its score), the referable decision with
its operating point, gradeability, the photograph as the model saw it and, where available, a
Grad-CAM overlay; for a photograph judged ungradable, "retake or refer" with the model's output
in a collapsed panel) and several photographs (the table of `dr-hf predict` and its CSV). Both
events run on one worker (`concurrency_id="grader"`), so the model is never used by two requests
at once; the queue holds `queue_size` more.

Defaults keep the page private and tidy: it binds 127.0.0.1, makes no share link, refuses
uploads over `max_file_size`, and keeps uploads, examples and CSVs in one temporary folder
(Gradio's `GRADIO_TEMP_DIR` unless that is set already), swept of files older than an hour and
removed when the server closes. The model's view and the Grad-CAM overlay reach Gradio as PNG
files already in its cache, each written once and renamed into place (`cached_png`), never
rewritten while another user downloads it.
"""

import hashlib
import io
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from dr_hf.demo.grading import (
    NOTICE,
    PRECISION,
    grade_photo,
    grade_photos,
    heatmap_module,
    render_examples,
    rule_words,
)
from dr_hf.grading_rule import GradeRule
from dr_hf.inference import Grader, grade_rule_for, load_grader

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORT = 7860
MAX_FILE_SIZE = "20mb"
QUEUE_SIZE = 16
CACHE_SWEEP = (600, 3600)  # every 10 minutes, delete this app's files older than an hour
TEMP_DIR_VARIABLE = "GRADIO_TEMP_DIR"
# The model's view fills its panel, pixels kept sharp (a 32-pixel input is shown large).
CSS = """
#dr-model-view img, #dr-heatmap img {
  width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
"""


def cached_png(image: np.ndarray | None, cache_dir: str | Path, name: str) -> str | None:
    """`image` (uint8 RGB) as `<cache_dir>/<sha256 of its PNG>/<name>.png`, for an image output.

    Gradio 6.31 saves an image output given as an array (`processing_utils.save_pil_to_cache`)
    with `Path.write_bytes` at a path named by its content, so when a second user's answer for
    the same photograph comes out while the first user is still downloading theirs, the same file
    is truncated and rewritten under the download: it ends short of its Content-Length ("peer
    closed connection without sending complete message body") and the answer is lost. A path
    already in the cache Gradio serves as it is; here each file is written once, under a
    temporary name and renamed into place, and never rewritten. A file already there gets a
    fresh ctime (its times set to their own values): the hourly sweep (`CACHE_SWEEP`) ages files
    by ctime and must not delete one just handed out again.
    """
    if image is None:
        return None
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    data = buffer.getvalue()
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()
    target = folder / f"{name}.png"
    try:
        times = target.stat()
        os.utime(target, ns=(times.st_atime_ns, times.st_mtime_ns))
        return str(target)
    except FileNotFoundError:  # not written yet, or swept since
        pass
    folder.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.png.")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(target)


def _single_tab(grader: Grader, examples: list[list[str]], heatmaps, rule: GradeRule) -> None:
    with gr.Row():
        with gr.Column():
            photo = gr.File(
                label="Fundus photograph",
                file_types=["image"],
                type="filepath",
                elem_id="dr-photo",
            )
            gr.Examples(
                [[path] for path, _ in examples],
                inputs=[photo],
                example_labels=[label for _, label in examples],
                label="Synthetic examples",
            )
            with gr.Row():
                view = gr.Image(
                    label="As the model saw it",
                    interactive=False,
                    format="png",
                    height=300,
                    elem_id="dr-model-view",
                )
                heatmap = gr.Image(
                    label="Grad-CAM of the predicted grade",
                    interactive=False,
                    format="png",
                    height=300,
                    visible=bool(heatmaps),
                    elem_id="dr-heatmap",
                )
        with gr.Column():
            summary = gr.HTML(elem_id="dr-summary")
            plot = gr.BarPlot(
                x="grade",
                y="probability",
                y_lim=[0, 1],
                sort=None,
                label="Probabilities",
                height=260,
                visible=grader.head != "regression",  # a score, no probabilities
                elem_id="dr-plot",
            )

    def on_photo(path):
        answer = grade_photo(grader, path, heatmaps, rule)
        shown = cached_png(answer.model_view, view.GRADIO_CACHE, "model_view")
        overlay = cached_png(answer.heatmap, heatmap.GRADIO_CACHE, "gradcam")
        return answer.summary, answer.probabilities, shown, overlay

    photo.change(
        on_photo,
        [photo],
        [summary, plot, view, heatmap],
        api_name="grade_photo",
        concurrency_id="grader",
        concurrency_limit=1,
    )


def _batch_tab(grader: Grader, tables: Path, rule: GradeRule) -> None:
    photos = gr.File(
        label="Fundus photographs",
        file_count="multiple",
        file_types=["image"],
        type="filepath",
        elem_id="dr-photos",
    )
    button = gr.Button("Grade all", variant="primary", elem_id="dr-grade-all")
    message = gr.Markdown(elem_id="dr-batch-message")
    table = gr.Dataframe(label="Grades", interactive=False, elem_id="dr-table")
    download = gr.File(label="CSV, as dr-hf predict writes it", elem_id="dr-csv")

    def on_photos(paths):
        return grade_photos(grader, paths, tables, rule)

    button.click(
        on_photos,
        [photos],
        [table, download, message],
        api_name="grade_photos",
        concurrency_id="grader",
        concurrency_limit=1,
    )


def build_app(
    grader: Grader, workdir: str | Path, heatmaps=None, rule: GradeRule | None = None
) -> gr.Blocks:
    """The page for `grader`, grading by `rule` (default: the model's saved rule); examples and
    CSVs go under `workdir`."""
    workdir = Path(workdir)
    rule = grade_rule_for(grader, rule)
    regression = grader.head == "regression"
    shown = "its regression score" if regression else f"probabilities to {PRECISION} decimals"
    examples = render_examples(workdir / "examples")
    with gr.Blocks(
        title="DR grader demo", analytics_enabled=False, delete_cache=CACHE_SWEEP
    ) as demo:
        gr.Markdown(
            f"# Diabetic retinopathy grader\n**{NOTICE}** Grades 0-4 (ICDR) of one trained "
            f"model, as `dr-hf predict` gives them: grade by {rule_words(rule, regression)}; "
            f"{shown}.",
            elem_id="dr-notice",
        )
        with gr.Tab("Single photograph"):
            _single_tab(grader, examples, heatmaps, rule)
        with gr.Tab("Several photographs"):
            _batch_tab(grader, workdir / "tables", rule)
    return demo


def _stop_on_sigterm() -> None:
    """SIGTERM (docker stop, systemd, kill) ends the blocking server as Ctrl-C does, so the
    temporary folder is removed either way."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


class DemoServer:
    """A built app with its temporary folder; `launch` serves it, `close` stops and cleans up."""

    def __init__(self, grader: Grader, queue_size: int = QUEUE_SIZE, rule: GradeRule | None = None):
        self.workdir = Path(tempfile.mkdtemp(prefix="dr_hf_demo_"))
        self._temp_dir_before = os.environ.get(TEMP_DIR_VARIABLE)
        if self._temp_dir_before is None:  # Gradio reads it when components are built
            os.environ[TEMP_DIR_VARIABLE] = str(self.workdir / "uploads")
        self.demo: gr.Blocks | None = None
        self.url: str | None = None
        try:
            # an exported ONNX model has no gradients: no heatmap panel
            heatmaps = None if hasattr(grader.model, "session") else heatmap_module()
            self.demo = build_app(grader, self.workdir, heatmaps, rule)
        except BaseException:
            self.close()
            raise
        self.demo.queue(max_size=queue_size, default_concurrency_limit=1)

    def launch(
        self,
        host: str | None = HOST,
        port: int | None = PORT,
        share: bool = False,
        max_file_size: str | int = MAX_FILE_SIZE,
        block: bool = True,
        quiet: bool = False,
    ) -> str:
        """Serve on host:port (None: Gradio's `GRADIO_SERVER_NAME` / `_PORT` or its defaults);
        with `block`, until interrupted, then close. Returns the local URL."""
        _, self.url, _ = self.demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            max_file_size=max_file_size,
            allowed_paths=[str(self.workdir / "examples"), str(self.workdir / "tables")],
            prevent_thread_lock=True,
            ssr_mode=False,
            mcp_server=False,
            run_history=False,
            css=CSS,
            quiet=quiet,
        )
        if block:
            try:
                _stop_on_sigterm()
                self.demo.block_thread()  # returns on Ctrl-C (or SIGTERM)
            finally:
                self.close()
        return self.url

    def close(self) -> None:
        """Stop serving, remove the temporary folder (uploads, examples, CSVs)."""
        if self.demo is not None:
            self.demo.close()
        if self._temp_dir_before is None:
            os.environ.pop(TEMP_DIR_VARIABLE, None)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "DemoServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(
    model: str | Path,
    retfound_weights: str | None = None,
    device: str | None = None,
    grade_rule: str | None = None,
    cut_points: str | None = None,
    **launch,
) -> DemoServer:
    """Load the grader once (model folder or LoRA adapter) and serve its page, grading by
    `grade_rule` / `cut_points` (see `grade_rule_for`; default the model's saved rule);
    `launch` holds `DemoServer.launch`'s arguments (host, port, share, max_file_size, block,
    quiet)."""
    grader = load_grader(model, retfound_weights, device)
    server = DemoServer(grader, rule=grade_rule_for(grader, grade_rule, cut_points))
    try:
        server.launch(**launch)
    except BaseException:
        server.close()
        raise
    return server
