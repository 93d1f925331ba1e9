"""`dr-hf`: one console script, a subcommand per job.

dr-hf make-synthetic --output data/synthetic --num-images 400
dr-hf prepare --data_dir data/aptos --output data/aptos_prepared --size 280
dr-hf train --config configs/quickstart.yaml [--flags that override it]
dr-hf evaluate --model outputs/run/best --data_dir data/test
dr-hf predict --model outputs/run/best image.png folder/
"""

import argparse
import logging
import sys

import yaml

COMMANDS = ("make-synthetic", "prepare", "train", "evaluate", "predict")


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

    from dr_hf.config.arguments import DataArguments, PrepareArguments
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
        from dr_hf.evaluation.evaluate import evaluate_main

        return evaluate_main(rest)
    from dr_hf.evaluation.predict import predict_main

    return predict_main(rest)


if __name__ == "__main__":
    sys.exit(main())
