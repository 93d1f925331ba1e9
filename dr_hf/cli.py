"""`dr-hf`: one console script, a subcommand per job.

dr-hf make-synthetic --output data/synthetic --num-images 400
dr-hf prepare --data_dir data/aptos --output data/aptos_prepared --size 280
dr-hf prepare --data_dir data/aptos --output data/aptos_raw --size 280 --format raw --image_size 224
dr-hf train --config configs/quickstart.yaml [--flags that override it]
dr-hf cv --config configs/quickstart.yaml --folds 5 [--fold K]   |   dr-hf cv --summarize DIR
dr-hf evaluate --model outputs/run/best --data_dir data/test
dr-hf predict --model outputs/run/best image.png folder/   (--model A --model B: an ensemble)
dr-hf compare reports/a reports/b [--output DIR] [--bootstrap 2000]
dr-hf demo --model outputs/run/best [--port 7860] [--export-space space/]
dr-hf export outputs/run/best --format onnx --output exported/   (graded by onnxruntime, no torch)

Each `*_main` parses its flags, calls the library (`dr_hf.data`, `dr_hf.training`,
`dr_hf.evaluation`, `dr_hf.inference`), prints the outcome and returns the exit code; the heavy imports happen only
inside the subcommand that needs them, so `dr-hf --help` answers at once.
"""

import argparse
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

COMMANDS = (
    "make-synthetic",
    "prepare",
    "train",
    "cv",
    "evaluate",
    "predict",
    "compare",
    "demo",
    "export",
)


def _setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_synthetic_main(argv: list[str]) -> int:
    from dr_hf.data.synthetic import make_synthetic

    parser = argparse.ArgumentParser(
        prog="dr-hf make-synthetic",
        description="Write a synthetic fundus data set in APTOS layout.",
    )
    parser.add_argument(
        "--output", required=True, help="Folder to create (train.csv + train_images/)."
    )
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=256, help="Width in pixels.")
    parser.add_argument("--height", type=int, default=None, help="Height (default: square).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an existing synthetic set."
    )
    args = parser.parse_args(argv)
    out = make_synthetic(
        args.output,
        num_images=args.num_images,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(f"Wrote {args.num_images} synthetic fundus photographs to {out}")
    return 0


def prepare_main(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from dr_hf.config.arguments import DataArguments
    from dr_hf.config.prepare_arguments import PrepareArguments
    from dr_hf.data.loading import load_dr_dataset
    from dr_hf.data.prepare import prepare_dataset

    parser = HfArgumentParser((DataArguments, PrepareArguments), prog="dr-hf prepare")
    data_args, prepare_args = parser.parse_args_into_dataclasses(argv)
    dataset = load_dr_dataset(data_args)
    out = prepare_dataset(
        dataset,
        prepare_args.output,
        size=prepare_args.size,
        crop=data_args.crop_fov,
        ben_graham=data_args.ben_graham,
        num_proc=prepare_args.num_proc,
        format=prepare_args.format,
        image_size=(data_args.image_size or 224) if prepare_args.format == "raw" else None,
    )
    print(dataset)
    print(f"Prepared data set saved to {out}; train with --data_dir {out}")
    return 0


def train_main(argv: list[str]) -> int:
    from dr_hf.config.parsing import DRArgumentParser, resolved_config

    parser = DRArgumentParser(prog="dr-hf train")
    data_args, model_args, training_args, debug = parser.parse(argv)
    if debug:
        print(
            yaml.safe_dump(resolved_config(data_args, model_args, training_args), sort_keys=False)
        )
        return 0
    from dr_hf.training.run import run_training

    history = run_training(data_args, model_args, training_args)
    if history.get("val_qwk") and training_args.process_index == 0:
        best = max(v for v in history["val_qwk"] if v is not None)
        print(f"Best validation QWK: {best:.4f}; model in {training_args.output_dir}/best")
    return 0


def evaluate_main(argv: list[str]) -> int:
    """`dr-hf evaluate --model PATH --data DIR [--output DIR] [--tta] [--bootstrap N]`: 0 once the
    report is written, 2 on usage errors and on data or files that cannot be used."""
    from transformers import HfArgumentParser

    from dr_hf.config.arguments import DataArguments
    from dr_hf.evaluation.evaluate import (
        EvaluateArguments,
        evaluate_model,
        report_dir,
        run_data_fields,
    )
    from dr_hf.evaluation.report import format_table
    from dr_hf.inference import add_model_flags, named_models

    argv = ["--data_dir" if arg == "--data" else arg for arg in argv]
    argv = [f"--data_dir={arg[7:]}" if arg.startswith("--data=") else arg for arg in argv]
    models = argparse.ArgumentParser(prog="dr-hf evaluate", add_help=False)
    add_model_flags(models)
    parser = HfArgumentParser((EvaluateArguments, DataArguments), prog="dr-hf evaluate")
    if {"-h", "--help"} & set(argv):  # the model flags, then the evaluation and data flags
        print(models.format_help() + parser.format_help())
        return 0
    try:
        named, argv = models.parse_known_args(argv)
        paths = named_models(named.model, named.models_file)
        eval_args, data_args = parser.parse_args_into_dataclasses(argv)
        run_fields = run_data_fields(paths[0]) if eval_args.split != "all" else {}
        if run_fields:  # the run's data as defaults: flags given here still win
            parser.set_defaults(**run_fields)
            eval_args, data_args = parser.parse_args_into_dataclasses(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except (OSError, ValueError) as error:
        print(f"dr-hf evaluate: {error}", file=sys.stderr)
        return 2
    options = asdict(eval_args)
    try:
        results = evaluate_model(paths, data_args, options.pop("output"), **options)
    except (OSError, ValueError) as error:  # missing files, an earlier report, DataError...
        print(f"dr-hf evaluate: {error}", file=sys.stderr)
        return 2
    output = eval_args.output or report_dir(paths, data_args, eval_args.split)
    model = results["model"] if len(paths) == 1 else "ensemble of " + ", ".join(map(str, paths))
    print(f"\n{results['num_images']} images ({results['split']}), model {model}")
    print(format_table(results))
    print(
        f"\nReport: {output} (metrics.json, predictions.csv, confusion_matrix/roc/reliability.png)"
    )
    return 0


def predict_parser() -> argparse.ArgumentParser:
    """The flags of `dr-hf predict`; the output format's choices are `PredictionResult.save`'s."""
    from dr_hf.inference import OPERATING_POINTS, add_grade_rule_flags, add_model_flags
    from dr_hf.inference.results import SAVE_FORMATS

    parser = argparse.ArgumentParser(
        prog="dr-hf predict",
        description="Grade fundus photographs with a model trained by dr-hf.",
    )
    parser.add_argument("inputs", nargs="*", metavar="IMAGE_OR_FOLDER")
    parser.add_argument(
        "--images",
        nargs="+",
        action="extend",
        default=[],
        metavar="IMAGE_OR_FOLDER",
        help="Images or folders to grade, as the positional names are (both may be given).",
    )
    add_model_flags(parser)
    add_grade_rule_flags(parser)
    parser.add_argument(
        "--output",
        help="preds.csv, preds.jsonl (JSON Lines) or preds.json (one JSON array); default: CSV on "
        "standard output. CSV and JSON Lines are written batch by batch, in input order, as "
        "the photographs are graded; a JSON array is written whole at the end.",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Continue a killed run: keep the rows already in --output (CSV or JSON Lines) and "
        "grade only the photographs not named there; with the same --batch-size, the file ends "
        "as an uninterrupted run's.",
    )
    parser.add_argument("--format", choices=SAVE_FORMATS, help="Overrides the file suffix.")
    parser.add_argument("--tta", action="store_true", help="Average over flips and rot90.")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when available).")
    parser.add_argument("--num-workers", "--num_workers", type=int, help="Decoding workers.")
    parser.add_argument(
        "--retfound-weights",
        "--retfound_weights",
        help="Base weights of a RETFound adapter, when the recorded path is not found here.",
    )
    parser.add_argument(
        "--referable-threshold",
        "--referable_threshold",
        type=float,
        help="Refer when P(grade >= 2), or a regression model's score, reaches this threshold "
        "(overrides --operating-point).",
    )
    parser.add_argument(
        "--heatmaps",
        metavar="DIR",
        help="Also write each graded photograph with a Grad-CAM overlay for its predicted grade, "
        "beside the grade and probabilities, as DIR/<name>.png.",
    )
    ungradable = parser.add_mutually_exclusive_group()
    ungradable.add_argument(
        "--grade-ungradable",
        "--grade_ungradable",
        action="store_true",
        help="Research runs: give a grade and referable decision to photographs judged "
        "ungradable too. By default they get none: grade_name 'ungradable', decision 'retake or "
        "refer' (their probabilities and quality_issues are kept).",
    )
    ungradable.add_argument(
        "--only-gradable",
        "--only_gradable",
        action="store_true",
        help="The default (ungradable photographs get no grade); accepted for earlier scripts.",
    )
    parser.add_argument(
        "--operating-point",
        "--operating_point",
        choices=OPERATING_POINTS,
        help="Referable decision: the threshold saved with the model for 90%% or 95%% "
        "specificity on its validation split, or the decided grade >= 2 (argmax); default: "
        "spec90 where the model has it, else argmax.",
    )
    return parser


def predict_main(argv: list[str]) -> int:
    """`dr-hf predict`: 0 when every image was graded, 1 when some failed, 2 on usage errors
    (and on a file `--resume` cannot continue)."""
    from dr_hf.inference import grade_rule_for, is_model_folder, load_graders, named_models

    parser = predict_parser()
    try:
        args = parser.parse_intermixed_args(argv)
        images = args.inputs + args.images
        if not images:
            parser.error("the following arguments are required: IMAGE_OR_FOLDER")
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.batch_size < 1:
        print(f"--batch-size must be at least 1, got {args.batch_size}.", file=sys.stderr)
        return 2
    if args.resume and not args.output:
        print(
            "dr-hf predict: --resume needs the --output file of the run to resume.", file=sys.stderr
        )
        return 2
    mistaken = [name for name in images if is_model_folder(name)]
    if mistaken:  # a model given without --model would otherwise be searched for images
        print(
            f"dr-hf predict: {', '.join(mistaken)}: a model folder among the images; name each "
            "model with its own --model.",
            file=sys.stderr,
        )
        return 2
    try:
        paths = named_models(args.model, args.models_file)
        graders = load_graders(paths, args.retfound_weights, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"dr-hf predict: cannot load the model: {error}", file=sys.stderr)
        return 2
    try:  # a rule the models cannot follow is refused before any photograph is read
        grade_rule_for(graders, args.grade_rule, args.cut_points)
    except ValueError as error:
        print(f"dr-hf predict: {error}", file=sys.stderr)
        return 2
    if args.heatmaps and len(graders) > 1:
        print("dr-hf predict: --heatmaps needs one --model, not an ensemble.", file=sys.stderr)
        return 2
    if args.heatmaps and graders[0].head == "regression":
        print(
            "dr-hf predict: --heatmaps figures show grade probabilities, which a regression model "
            "does not have: grade it without --heatmaps.",
            file=sys.stderr,
        )
        return 2
    if args.heatmaps and hasattr(graders[0].model, "session"):  # an exported ONNX folder
        print(
            "dr-hf predict: --heatmaps needs the model's gradients, which an exported ONNX folder "
            "does not have: give the PyTorch model folder it was exported from.",
            file=sys.stderr,
        )
        return 2
    from dr_hf.inference.archive import stream_predictions

    options = {
        "tta": args.tta,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "referable_threshold": args.referable_threshold,
        "operating_point": args.operating_point,
        "grade_ungradable": args.grade_ungradable,
        "grade_rule": args.grade_rule,
        "cut_points": args.cut_points,
    }
    graded = failed = heatmaps = 0
    try:
        for part in stream_predictions(
            graders, images, args.output, args.format, args.resume, **options
        ):
            graded += len(part.names)
            failed += len(part.failures)
            for name, reason in part.failures:
                print(f"FAILED {name}: {reason}", file=sys.stderr)
            if args.heatmaps:
                from dr_hf.evaluation.explain import file_heatmaps

                files = [name for name in part.names if Path(name).is_file()]
                heatmaps += len(file_heatmaps(graders[0], files, args.heatmaps))
    except ValueError as error:
        print(f"dr-hf predict: {error}", file=sys.stderr)
        return 2
    if args.heatmaps:
        print(f"Wrote {heatmaps} heatmap(s) into {args.heatmaps}.", file=sys.stderr)
    summary = f"Graded {graded} image(s)"
    summary += f" into {args.output}" if args.output else ""
    if failed:
        print(f"{summary}; {failed} could not be graded.", file=sys.stderr)
        return 1
    print(f"{summary}.", file=sys.stderr)
    return 0


def compare_main(argv: list[str]) -> int:
    """`dr-hf compare REPORT REPORT [...]`: 0 once the comparison is written, 2 on reports that
    cannot be read or compared (other images, other true grades)."""
    from dr_hf.evaluation.compare import compare_parser, compare_reports, comparison_markdown

    try:
        args = compare_parser().parse_args(argv)
        result = compare_reports(**vars(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except (OSError, ValueError) as error:
        print(f"dr-hf compare: {error}", file=sys.stderr)
        return 2
    print(comparison_markdown(result))
    print(f"\nComparison: {result['output']} (comparison.json, comparison.md, comparison.png)")
    return 0


def demo_main(argv: list[str]) -> int:
    """`dr-hf demo`: a Gradio page grading photographs with one model (the `demo` extra); its
    flags live in `dr_hf.demo.cli`. 0 after serving or exporting a Space, 2 on errors."""
    from dr_hf.demo.cli import main as run_demo

    return run_demo(argv)


def export_parser() -> argparse.ArgumentParser:
    from dr_hf.export import OPSET, PARITY_TOLERANCE, QWK_TOLERANCE

    parser = argparse.ArgumentParser(
        prog="dr-hf export",
        description="Export a trained model (a LoRA adapter merged first) for onnxruntime, with "
        "its processor, grades and operating points; refused when the exported model's "
        "probabilities differ from PyTorch's on synthetic photographs.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="best/, a checkpoint-N or an adapter folder."
    )
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="Only ONNX for now.")
    parser.add_argument("--output", required=True, metavar="DIR", help="A new (or empty) folder.")
    parser.add_argument(
        "--opset", type=int, default=OPSET, help="ONNX opset (default %(default)s)."
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=PARITY_TOLERANCE,
        help="Largest probability difference to PyTorch accepted (default %(default)g).",
    )
    parser.add_argument(
        "--retfound-weights",
        "--retfound_weights",
        metavar="FILE",
        help="The base weights an adapter was trained on, when its recorded path is not here.",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="Quantise to int8 (CNNs statically, calibrated on --data or synthetic photographs; "
        "ViTs' matrix products dynamically); the change is printed and written to "
        "quantization.json.",
    )
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="A labelled set (a data_dir) on which --quantize measures QWK and referable AUROC.",
    )
    parser.add_argument(
        "--qwk-tolerance",
        type=float,
        default=QWK_TOLERANCE,
        help="Largest QWK drop on --data that int8 may cause (default %(default)g).",
    )
    return parser


def export_main(argv: list[str]) -> int:
    """`dr-hf export MODEL --format onnx --output DIR`: 0 when written, 2 when refused."""
    try:
        args = export_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    from dr_hf.export import export_onnx

    try:
        done = export_onnx(
            args.model,
            args.output,
            args.retfound_weights,
            args.opset,
            args.tolerance,
            args.quantize,
            args.data,
            args.qwk_tolerance,
        )
    except (OSError, ValueError) as error:
        print(f"dr-hf export: {error}", file=sys.stderr)
        return 2
    print(
        f"Wrote {done.folder} ({done.exporter} exporter, opset {args.opset}); largest probability "
        f"difference to PyTorch {done.max_difference:.2e}."
    )
    if done.quantization:
        q = done.quantization
        print(
            f"int8 ({q['settings']['family']}: {q['settings']['method']}): largest probability "
            f"difference to fp32 {q['max_probability_difference']:.2e}; "
            f"{q['fp32_bytes'] / 1e6:.1f} MB -> {q['int8_bytes'] / 1e6:.1f} MB."
        )
        if labelled := q.get("labelled"):
            print(
                f"On {labelled['data']} ({labelled['images']} images): QWK "
                f"{labelled['fp32']['qwk']:.4f} -> {labelled['int8']['qwk']:.4f}, referable AUROC "
                f"{labelled['fp32']['referable_auroc']:.4f} -> "
                f"{labelled['int8']['referable_auroc']:.4f}."
            )
    return 0


def cv_main(argv: list[str]) -> int:
    """`dr-hf cv --config X --folds 5 [--fold_seed S] [--fold K]`, or `dr-hf cv --summarize DIR`."""
    from transformers import HfArgumentParser

    from dr_hf.config.parsing import DRArgumentParser
    from dr_hf.training.cv import CVArguments, run_cv, summarize_cv, summary_markdown

    pre = argparse.ArgumentParser(prog="dr-hf cv", add_help=False)
    pre.add_argument("--summarize", metavar="DIR", help="Collect the fold-K/ results of DIR.")
    if {"-h", "--help"} & set(argv):  # the cv flags, then every training flag
        cv_help = HfArgumentParser(CVArguments, prog="dr-hf cv", add_help=False).format_help()
        print(pre.format_help() + cv_help + DRArgumentParser(prog="dr-hf cv").format_help())
        return 0
    known, rest = pre.parse_known_args(argv)
    try:
        if known.summarize:
            summary = summarize_cv(known.summarize)
        else:
            cv_args, rest = HfArgumentParser(CVArguments).parse_args_into_dataclasses(
                rest, return_remaining_strings=True
            )
            data_args, model_args, training_args, _ = DRArgumentParser(prog="dr-hf cv").parse(rest)
            summary = run_cv(data_args, model_args, training_args, cv_args)
    except (OSError, ValueError) as error:
        print(f"dr-hf cv: {error}", file=sys.stderr)
        return 2
    if summary is not None:
        print(summary_markdown(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    _setup_logging()
    command, rest = argv[0], argv[1:]
    if command == "make-synthetic":
        return make_synthetic_main(rest)
    if command == "prepare":
        return prepare_main(rest)
    if command == "train":
        return train_main(rest)
    if command == "evaluate":
        return evaluate_main(rest)
    if command == "demo":
        return demo_main(rest)
    if command == "compare":
        return compare_main(rest)
    if command == "cv":
        return cv_main(rest)
    if command == "export":
        return export_main(rest)
    return predict_main(rest)


if __name__ == "__main__":
    sys.exit(main())
