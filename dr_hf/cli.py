"""`dr-hf`: one console script, a subcommand per job.

dr-hf make-synthetic --output data/synthetic --num-images 400   (--patients 200: EyePACS pairs)
dr-hf prepare --data_dir data/aptos --output data/aptos_prepared --size 280
dr-hf train --config configs/quickstart.yaml [--flags that override it]
dr-hf cv --config configs/quickstart.yaml --folds 5 [--fold K]   |   dr-hf cv --summarize DIR
dr-hf evaluate --model outputs/run/best --data_dir data/test
dr-hf predict --model outputs/run/best image.png folder/   (--model A --model B: an ensemble)
dr-hf compare reports/a reports/b [--output DIR] [--bootstrap 2000]
dr-hf demo --model outputs/run/best [--port 7860] [--export-space space/]
dr-hf export outputs/run/best --format onnx --output exported/   (graded by onnxruntime, no torch)

`build_parser()` is the whole command line (argparse subparsers, one per command); each
command's parser is built from dataclasses by `HfArgumentParser` when it is first used, so
listing the commands imports nothing heavy, and a command's `--help` imports only what its flags
need (train and cv: transformers' `TrainingArguments`, and with it torch). Each `*_main(argv)`
parses its flags, calls the library (`dr_hf.data`, `dr_hf.training`, `dr_hf.evaluation`,
`dr_hf.inference`), prints the outcome and returns the exit code: 0 done, 2 usage errors and
input that cannot be used.

Where each command's flags are defined:
  make-synthetic, predict, evaluate, compare, demo, export: `dr_hf.config.command_arguments`
  prepare: `dr_hf.config.prepare_arguments` and `DataArguments`
  train, cv: `DataArguments`, `ModelArguments` (`dr_hf.config.arguments`), `DRTrainingArguments`
  (`dr_hf.config.training_arguments`), with `--config` (`dr_hf.config.parsing`); cv adds
  `dr_hf.training.cv.CVArguments`.
"""

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple


def _setup_logging() -> None:
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO
    )
    for noisy in ("httpx", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _exit_code(main: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """`main`, returning the exit code argparse chose (help: 0, a usage error: 2) rather than
    raising SystemExit, so that callers in Python get it as a number too."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)

    return run


# ---------------------------------------------------------------- make-synthetic, prepare


def make_synthetic_parser() -> argparse.ArgumentParser:
    from dr_hf.config.command_arguments import MakeSyntheticArguments
    from dr_hf.config.command_parser import CommandParser

    return CommandParser(
        MakeSyntheticArguments,
        prog="dr-hf make-synthetic",
        description="Write a synthetic fundus data set: independent photographs in the APTOS "
        "layout, or with --patients both eyes of each patient in the EyePACS layout.",
    )


@_exit_code
def make_synthetic_main(argv: list[str]) -> int:
    try:
        (args,) = make_synthetic_parser().parse(argv)
        from dr_hf.data.synthetic import DEFAULT_IMAGES, make_synthetic

        options = asdict(args)
        out = make_synthetic(options.pop("output"), **options)
    except ValueError as error:
        print(f"dr-hf make-synthetic: {error}", file=sys.stderr)
        return 2
    if args.patients is None:
        print(f"Wrote {args.num_images or DEFAULT_IMAGES} synthetic fundus photographs to {out}")
    else:
        print(f"Wrote both eyes of {args.patients} synthetic patients to {out}")
    return 0


def prepare_parser() -> argparse.ArgumentParser:
    from dr_hf.config.arguments import DataArguments
    from dr_hf.config.command_parser import CommandParser
    from dr_hf.config.prepare_arguments import PrepareArguments

    return CommandParser(
        (DataArguments, PrepareArguments),
        prog="dr-hf prepare",
        description="Decode, crop and resize a data set once into a cache `dr-hf train` reads.",
    )


@_exit_code
def prepare_main(argv: list[str]) -> int:
    data_args, prepare_args = prepare_parser().parse(argv)
    from dr_hf.data.loading import load_dr_dataset
    from dr_hf.data.prepare import prepare_dataset

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


# ---------------------------------------------------------------- train, cv


def train_parser() -> argparse.ArgumentParser:
    from dr_hf.config.parsing import DRArgumentParser

    return DRArgumentParser(
        prog="dr-hf train", description="Fine-tune a grader (a YAML --config, flags override it)."
    )


@_exit_code
def train_main(argv: list[str]) -> int:
    data_args, model_args, training_args, debug = train_parser().parse(argv)
    if debug:
        import yaml

        from dr_hf.config.parsing import resolved_config

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


def cv_parser() -> argparse.ArgumentParser:
    from dr_hf.config.parsing import DRArgumentParser
    from dr_hf.training.cv import CVArguments

    parser = DRArgumentParser(
        extra_dataclasses=(CVArguments,),
        prog="dr-hf cv",
        description="k-fold cross-validation: train each fold, then summarise the folds.",
    )
    parser.add_argument(
        "--summarize", metavar="DIR", help="Only collect the fold-K/ results of DIR."
    )
    return parser


@_exit_code
def cv_main(argv: list[str]) -> int:
    """`dr-hf cv --config X --folds 5 [--fold_seed S] [--fold K]`, or `dr-hf cv --summarize DIR`."""
    parser = cv_parser()
    from dr_hf.training.cv import run_cv, summarize_cv, summary_markdown

    try:
        known, _ = parser.parse_known_args(argv)
        if known.summarize:
            summary = summarize_cv(known.summarize)
        else:
            data_args, model_args, training_args, cv_args, _ = parser.parse_all(argv)
            summary = run_cv(data_args, model_args, training_args, cv_args)
    except (OSError, ValueError) as error:
        print(f"dr-hf cv: {error}", file=sys.stderr)
        return 2
    if summary is not None:
        print(summary_markdown(summary))
    return 0


# ---------------------------------------------------------------- evaluate, predict, compare


def evaluate_parser() -> argparse.ArgumentParser:
    from dr_hf.config.arguments import DataArguments
    from dr_hf.config.command_arguments import (
        EvaluateArguments,
        GradeRuleArguments,
        ModelsArguments,
    )
    from dr_hf.config.command_parser import CommandParser

    parser = CommandParser(
        (ModelsArguments, EvaluateArguments, GradeRuleArguments, DataArguments),
        prog="dr-hf evaluate",
        description="Evaluate models on a labelled set: metrics with bootstrap CIs, figures, the "
        "predictions table.",
    )
    parser.add_argument(
        "--data", dest="data_dir", nargs="+", metavar="DIR", help="The same as --data_dir."
    )
    return parser


@_exit_code
def evaluate_main(argv: list[str]) -> int:
    """`dr-hf evaluate --model PATH --data DIR [--output DIR] [--tta] [--bootstrap N]`: 0 once the
    report is written, 2 on usage errors and on data or files that cannot be used."""
    parser = evaluate_parser()
    try:
        models, eval_args, rule, data_args = parser.parse(argv)
        from dr_hf.evaluation.evaluate import evaluate_model, report_dir, run_data_fields
        from dr_hf.evaluation.report import format_table
        from dr_hf.inference import named_models

        paths = named_models(models.model, models.models_file)
        run_fields = run_data_fields(paths[0]) if eval_args.split != "all" else {}
        if run_fields:  # the run's data as defaults: flags given here still win
            parser.set_defaults(**run_fields)
            models, eval_args, rule, data_args = parser.parse(argv)
    except (OSError, ValueError) as error:
        print(f"dr-hf evaluate: {error}", file=sys.stderr)
        return 2
    options = {**asdict(eval_args), **asdict(rule)}
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
    from dr_hf.config.command_arguments import (
        GradeRuleArguments,
        ModelsArguments,
        PredictArguments,
    )
    from dr_hf.config.command_parser import CommandParser

    return CommandParser(
        (PredictArguments, ModelsArguments, GradeRuleArguments),
        intermixed=True,  # images may come before, between and after the flags
        prog="dr-hf predict",
        description="Grade fundus photographs with a model trained by dr-hf.",
    )


def _predict_refusal(args, graders) -> str | None:
    """Why `dr-hf predict` cannot run these flags with these graders, or None."""
    if args.heatmaps and len(graders) > 1:
        return "--heatmaps needs one --model, not an ensemble."
    if args.heatmaps and graders[0].head == "regression":
        return (
            "--heatmaps figures show grade probabilities, which a regression model does not "
            "have: grade it without --heatmaps."
        )
    if args.heatmaps and hasattr(graders[0].model, "session"):  # an exported ONNX folder
        return (
            "--heatmaps needs the model's gradients, which an exported ONNX folder does not "
            "have: give the PyTorch model folder it was exported from."
        )
    return None


@_exit_code
def predict_main(argv: list[str]) -> int:
    """`dr-hf predict`: 0 when every image was graded, 1 when some failed, 2 on usage errors
    (and on a file `--resume` cannot continue)."""
    parser = predict_parser()
    try:
        args, models, rule = parser.parse(argv)
    except ValueError as error:
        print(f"dr-hf predict: {error}", file=sys.stderr)
        return 2
    from dr_hf.inference import grade_rule_for, is_model_folder, load_graders, named_models

    images = args.inputs + args.images
    if not images:
        parser.error("the following arguments are required: IMAGE_OR_FOLDER")
    mistaken = [name for name in images if is_model_folder(name)]
    if mistaken:  # a model given without --model would otherwise be searched for images
        print(
            f"dr-hf predict: {', '.join(mistaken)}: a model folder among the images; name each "
            "model with its own --model.",
            file=sys.stderr,
        )
        return 2
    try:
        paths = named_models(models.model, models.models_file)
        graders = load_graders(paths, args.retfound_weights, args.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"dr-hf predict: cannot load the model: {error}", file=sys.stderr)
        return 2
    try:  # a rule the models cannot follow is refused before any photograph is read
        grade_rule_for(graders, rule.grade_rule, rule.cut_points)
    except ValueError as error:
        print(f"dr-hf predict: {error}", file=sys.stderr)
        return 2
    refusal = _predict_refusal(args, graders)
    if refusal:
        print(f"dr-hf predict: {refusal}", file=sys.stderr)
        return 2
    from dr_hf.inference.archive import stream_predictions

    options = {
        "tta": args.tta,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "referable_threshold": args.referable_threshold,
        "operating_point": args.operating_point,
        "grade_ungradable": args.grade_ungradable,
        **asdict(rule),
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


def compare_parser() -> argparse.ArgumentParser:
    from dr_hf.config.command_arguments import CompareArguments
    from dr_hf.config.command_parser import CommandParser

    return CommandParser(
        CompareArguments,
        intermixed=True,
        prog="dr-hf compare",
        description="Compare dr-hf evaluate reports of the same images: metrics with bootstrap "
        "CIs, paired-bootstrap tests of QWK and referable-DR AUROC, overlaid ROC curves.",
    )


@_exit_code
def compare_main(argv: list[str]) -> int:
    """`dr-hf compare REPORT REPORT [...]`: 0 once the comparison is written, 2 on reports that
    cannot be read or compared (other images, other true grades)."""
    (args,) = compare_parser().parse(argv)
    from dr_hf.evaluation.compare import compare_reports, comparison_markdown

    try:
        result = compare_reports(**asdict(args))
    except (OSError, ValueError) as error:
        print(f"dr-hf compare: {error}", file=sys.stderr)
        return 2
    print(comparison_markdown(result))
    print(f"\nComparison: {result['output']} (comparison.json, comparison.md, comparison.png)")
    return 0


# ---------------------------------------------------------------- demo, export


def demo_parser() -> argparse.ArgumentParser:
    from dr_hf.demo.cli import demo_parser

    return demo_parser()


def demo_main(argv: list[str]) -> int:
    """`dr-hf demo`: a Gradio page grading photographs with one model (the `demo` extra); what
    it does lives in `dr_hf.demo.cli`. 0 after serving or exporting a Space, 2 on errors."""
    from dr_hf.demo.cli import main as run_demo

    return run_demo(argv)


def export_parser() -> argparse.ArgumentParser:
    from dr_hf.config.command_arguments import ExportArguments
    from dr_hf.config.command_parser import CommandParser

    return CommandParser(
        ExportArguments,
        intermixed=True,
        prog="dr-hf export",
        description="Export a trained model (a LoRA adapter merged first) for onnxruntime, with "
        "its processor, grades and operating points; refused when the exported model's "
        "probabilities differ from PyTorch's on synthetic photographs.",
    )


@_exit_code
def export_main(argv: list[str]) -> int:
    """`dr-hf export MODEL --format onnx --output DIR`: 0 when written, 2 when refused."""
    (args,) = export_parser().parse(argv)
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


# ---------------------------------------------------------------- the whole command line


class Command(NamedTuple):
    summary: str
    parser: Callable[[], argparse.ArgumentParser]
    main: Callable[[list[str]], int]


COMMANDS = {
    "make-synthetic": Command(
        "Write a synthetic data set (APTOS layout, or EyePACS pairs with --patients).",
        make_synthetic_parser,
        make_synthetic_main,
    ),
    "prepare": Command(
        "Decode, crop and resize a data set once into a cache.", prepare_parser, prepare_main
    ),
    "train": Command("Fine-tune a grader.", train_parser, train_main),
    "cv": Command("k-fold cross-validation, or --summarize its folds.", cv_parser, cv_main),
    "evaluate": Command(
        "Metrics, figures and predictions on a labelled set.", evaluate_parser, evaluate_main
    ),
    "predict": Command(
        "Grade photographs (one model, or an ensemble).", predict_parser, predict_main
    ),
    "compare": Command(
        "Compare evaluate reports of the same images.", compare_parser, compare_main
    ),
    "demo": Command("Serve a grading web page, or export it as a Space.", demo_parser, demo_main),
    "export": Command("Export a model to ONNX, optionally int8.", export_parser, export_main),
}


CACHED_HELP = ("train", "cv")
"""Commands whose flags import torch: their `--help` page is kept on disk after it is first built
(`dr_hf.config.help_cache`), so it answers at once from the second time on."""


class _Deferred(argparse.ArgumentParser):
    """A command's place among `build_parser()`'s subparsers: its real parser (`make()`) is
    built when it first parses or prints help, so that listing the commands imports nothing."""

    def __init__(self, make: Callable[[], argparse.ArgumentParser], **kwargs):
        super().__init__(**kwargs)
        self._make, self._real = make, None

    def real(self) -> argparse.ArgumentParser:
        if self._real is None:
            self._real = self._make()
        return self._real

    def parse_known_args(self, args=None, namespace=None):
        real = self.real()
        if getattr(real, "intermixed", False):
            return real.parse_known_intermixed_args(args, namespace)
        return real.parse_known_args(args, namespace)

    def format_usage(self) -> str:
        return self.real().format_usage()

    def format_help(self) -> str:
        return self.real().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The whole `dr-hf` command line, every subcommand with every flag; parsing runs nothing.
    `build_parser().parse_args(["predict", "--model", "m", "x.png"])` checks a command line."""
    parser = argparse.ArgumentParser(
        prog="dr-hf",
        description="Diabetic retinopathy graders on the Hugging Face stack.",
        epilog="`dr-hf COMMAND --help` lists a command's flags.",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Deferred
    )
    for name, command in COMMANDS.items():
        commands.add_parser(name, help=command.summary, make=command.parser)
    return parser


@_exit_code
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS:  # exits: --help (0), or a usage error naming the commands (2)
        parser.parse_args(argv)
        parser.error("the command comes first: dr-hf COMMAND [flags]")
    if argv[0] in CACHED_HELP and argv[1:] in (["-h"], ["--help"]):
        from dr_hf.config.help_cache import cached_help

        print(cached_help(argv[0], lambda: COMMANDS[argv[0]].parser().format_help()), end="")
        return 0
    _setup_logging()
    return COMMANDS[argv[0]].main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
