"""What `dr-hf demo` does with its flags (`DemoArguments` and `GradeRuleArguments` of
`dr_hf.config.command_arguments`); `dr_hf.cli.demo_main` calls `main`.

dr-hf demo --model outputs/run/best [--host 127.0.0.1] [--port 7860] [--share]
dr-hf demo --model outputs/run/best --export-space space/ [--grade-rule argmax | --cut-points ...]
"""

import sys

from dr_hf.demo import NOTICE

MISSING = "dr-hf demo needs Gradio: pip install 'dr-hf[demo]' (gradio, gradio_client)."


def demo_parser():
    """The `CommandParser` of `dr-hf demo`."""
    from dr_hf.config.command_arguments import DemoArguments, GradeRuleArguments
    from dr_hf.config.command_parser import CommandParser

    return CommandParser(
        (DemoArguments, GradeRuleArguments),
        prog="dr-hf demo",
        description=f"A web page grading fundus photographs with one model. {NOTICE}",
    )


def main(argv: list[str]) -> int:
    """0 after serving or exporting, 2 on usage errors, a model that cannot load or a missing
    Gradio."""
    try:
        args, rule = demo_parser().parse(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        from dr_hf.demo.app import serve
        from dr_hf.demo.space import export_space
    except ImportError as error:
        print(f"{MISSING} ({error})", file=sys.stderr)
        return 2
    try:
        from dr_hf.inference import grade_rule_for, load_grader, named_models
        from dr_hf.inference.onnx_model import is_onnx_folder

        if len(named_models(args.model)) != 1:
            raise ValueError(
                f"{args.model} is a dr-hf cv folder of several models; the demo grades with one: "
                "give one fold's best/ folder."
            )
        if args.export_space:  # a rule the model cannot follow is refused before writing
            grader = load_grader(args.model, args.retfound_weights, "cpu")
            grade_rule_for(grader, rule.grade_rule, rule.cut_points)
            out = export_space(args.model, args.export_space, args.retfound_weights, **vars(rule))
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
            rule.grade_rule,
            rule.cut_points,
            host=args.host,
            port=args.port,
            share=args.share,
            max_file_size=args.max_file_size,
        )
    except (OSError, ValueError) as error:  # no model, a non-empty folder, a busy port
        print(f"dr-hf demo: {error}", file=sys.stderr)
        return 2
    return 0
