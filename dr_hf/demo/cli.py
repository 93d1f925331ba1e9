"""The flags of `dr-hf demo` and what it does with them (`dr_hf.cli.demo_main` calls `main`).

dr-hf demo --model outputs/run/best [--host 127.0.0.1] [--port 7860] [--share]
dr-hf demo --model outputs/run/best --export-space space/
"""

import argparse
import sys

from dr_hf.demo.grading import NOTICE
from dr_hf.inference.models import add_grade_rule_flags

MISSING = "dr-hf demo needs Gradio: pip install 'dr-hf[demo]' (gradio, gradio_client)."


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dr-hf demo",
        description=f"A web page grading fundus photographs with one model. {NOTICE}",
    )
    parser.add_argument(
        "--model", required=True, help="best/, a checkpoint-N or a LoRA adapter folder."
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to bind (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the "
        "network).",
    )
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--retfound-weights",
        "--retfound_weights",
        help="Base weights of a RETFound adapter, when the recorded path is not found here.",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when available).")
    add_grade_rule_flags(parser)
    parser.add_argument(
        "--share", action="store_true", help="Also make a public gradio.live link (off by default)."
    )
    parser.add_argument(
        "--max-file-size", "--max_file_size", default="20mb", help="Upload limit (default 20mb)."
    )
    parser.add_argument(
        "--export-space",
        "--export_space",
        metavar="DIR",
        help="Write a Hugging Face Space folder serving this model to DIR, then exit.",
    )
    return parser


def main(argv: list[str]) -> int:
    """0 after serving or exporting, 2 on usage errors, a model that cannot load or a missing
    Gradio."""
    try:
        args = demo_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        from dr_hf.demo.app import serve
        from dr_hf.demo.space import export_space
    except ImportError as error:
        print(f"{MISSING} ({error})", file=sys.stderr)
        return 2
    try:
        from dr_hf.inference import named_models
        from dr_hf.inference.onnx_model import is_onnx_folder

        if len(named_models(args.model)) != 1:
            raise ValueError(
                f"{args.model} is a dr-hf cv folder of several models; the demo grades with one: "
                "give one fold's best/ folder."
            )
        if args.export_space:
            out = export_space(args.model, args.export_space, args.retfound_weights)
            runtime = "ONNX Runtime" if is_onnx_folder(out / "model") else "PyTorch"
            print(
                f"Space written to {out} (its model runs with {runtime}): run `python app.py` "
                "there, or upload the folder."
            )
            return 0
        serve(
            args.model,
            args.retfound_weights,
            args.device,
            args.grade_rule,
            args.cut_points,
            host=args.host,
            port=args.port,
            share=args.share,
            max_file_size=args.max_file_size,
        )
    except (OSError, ValueError) as error:  # no model, a non-empty folder, a busy port
        print(f"dr-hf demo: {error}", file=sys.stderr)
        return 2
    return 0
