"""Several data sources in one run: joined with a `source` column, split by grade and source,
ids kept distinct, shared photographs reported, and one source loaded exactly as before."""

import logging
import shutil

import numpy as np
import pytest
import yaml

from dr_hf.config.arguments import DataArguments
from dr_hf.config.parsing import DRArgumentParser, resolved_config
from dr_hf.data.loading import DataError, load_dr_dataset, source_counts
from dr_hf.data.prepare import prepare_dataset
from dr_hf.data.prepared import steps_left_to_apply
from dr_hf.data.splits import stratified_split
from dr_hf.data.synthetic import make_synthetic
from dr_hf.grades import NUM_GRADES


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Two synthetic APTOS-layout folders, 24 images of 48 px each, with the same ids."""
    root = tmp_path_factory.mktemp("sources")
    first = make_synthetic(root / "clinic_a", num_images=24, image_size=48, seed=1)
    second = make_synthetic(root / "clinic_b", num_images=24, image_size=48, seed=2)
    return first, second


def copy_source(source, tmp_path):
    return shutil.copytree(source, tmp_path / source.name)


def test_two_sources_load_as_one_dataset_with_a_source_column(two_sources):
    first, second = two_sources
    dd = load_dr_dataset(DataArguments(data_dir=[str(first), str(second)]))
    assert dd["train"].column_names == ["image", "label", "image_id", "patient_id", "eye", "source"]
    assert len(dd["train"]) + len(dd["validation"]) == 48
    for split in dd.values():
        assert set(split["source"]) == {"clinic_a", "clinic_b"}
    counts = source_counts(dd)
    assert sum(sum(per_grade) for per_grade in counts["train"].values()) == len(dd["train"])
    assert counts["shared_photographs"] == []
    for source in ("clinic_a", "clinic_b"):  # each grade of two images or more on both sides
        total = np.add(counts["train"][source], counts["validation"][source])
        for grade in range(NUM_GRADES):
            if total[grade] >= 2:
                assert counts["train"][source][grade] and counts["validation"][source][grade]
    assert dd["train"][0]["image"].mode == "RGB"


def test_ids_that_collide_across_sources_are_made_distinct(two_sources):
    first, second = two_sources
    dd = load_dr_dataset(DataArguments(data_dir=[str(first), str(second)]))
    rows = [(i, s) for split in dd.values() for i, s in zip(split["image_id"], split["source"])]
    assert len({image_id for image_id, _ in rows}) == 48
    assert all(image_id.startswith(f"{source}/") for image_id, source in rows)


def test_the_split_stratifies_by_grade_and_source(two_sources):
    first, second = two_sources
    dd = load_dr_dataset(DataArguments(data_dir=[str(first), str(second)], split_seed=3))
    again = load_dr_dataset(DataArguments(data_dir=[str(second), str(first)], split_seed=3))
    assert sorted(dd["validation"]["image_id"]) == sorted(again["validation"]["image_id"])
    train, validation = stratified_split(dd["train"], 0.5, 0)
    assert len(train) + len(validation) == len(dd["train"])
    for source in ("clinic_a", "clinic_b"):
        assert source in validation["source"] and source in train["source"]


def test_a_photograph_in_both_sources_is_reported(two_sources, tmp_path, caplog):
    first, second = two_sources
    second = copy_source(second, tmp_path)
    shutil.copy(first / "train_images" / "synth_00003.png", second / "train_images" / "copy.png")
    with open(second / "train.csv", "a") as file:
        file.write("copy,0\n")
    with caplog.at_level(logging.WARNING):
        dd = load_dr_dataset(DataArguments(data_dir=[str(first), str(second)]))
    assert "appear in several sources" in caplog.text and "clinic_b: copy" in caplog.text
    shared = source_counts(dd)["shared_photographs"]
    assert [item["images"] for item in shared] == [
        ["clinic_a: clinic_a/synth_00003", "clinic_b: copy"]
    ]


def test_an_error_in_the_second_source_names_it(two_sources, tmp_path):
    first, second = two_sources
    second = copy_source(second, tmp_path)
    with open(second / "train.csv", "a") as file:
        file.write("synth_00001,7\n")
    with pytest.raises(DataError, match=r"(?s)training source 2 of 2 \(clinic_b.*train\.csv"):
        load_dr_dataset(DataArguments(data_dir=[str(first), str(second)]))


def _old_split(labels, ids, share, seed):
    """The held-out ids of the single-source split as it was before sources were added."""
    held = []
    for grade in range(NUM_GRADES):
        rows = np.flatnonzero(labels == grade)
        if len(rows) < 2:
            continue
        rows = rows[np.argsort(ids[rows], kind="stable")]
        n = min(max(round(len(rows) * share), 1), len(rows) - 1)
        held.extend(np.random.default_rng([seed, grade]).permutation(rows)[:n].tolist())
    return sorted(ids[held].tolist())


def test_one_source_behaves_as_before(two_sources):
    first, _ = two_sources
    args = DataArguments(data_dir=str(first), split_seed=5)
    assert args.data_dir == [str(first)]
    dd = load_dr_dataset(args)
    assert dd["train"].column_names == ["image", "label", "image_id", "patient_id", "eye"]
    everything = [
        (i, g) for split in dd.values() for i, g in zip(split["image_id"], split["label"])
    ]
    ids = np.array([image_id for image_id, _ in sorted(everything)])
    labels = np.array([grade for _, grade in sorted(everything)])
    assert sorted(dd["validation"]["image_id"]) == _old_split(labels, ids, 0.2, 5)
    assert set(source_counts(dd)["train"]) == {"all"}


def test_prepared_and_raw_sources_mixed_are_refused_naming_them(two_sources, tmp_path):
    first, second = two_sources
    prepared = prepare_dataset(
        load_dr_dataset(DataArguments(data_dir=str(first))), tmp_path / "prepared_a", size=32
    )
    args = DataArguments(data_dir=[str(prepared), str(second)])
    with pytest.raises(ValueError, match=r"(?s)prepared differently.*prepared_a.*clinic_b"):
        steps_left_to_apply(args)
    again = prepare_dataset(
        load_dr_dataset(DataArguments(data_dir=str(second))), tmp_path / "b", 32
    )
    both = DataArguments(data_dir=[str(prepared), str(again)])
    assert steps_left_to_apply(both) == (False, False)


def test_the_flag_and_yaml_forms_parse(two_sources, tmp_path):
    first, second = two_sources
    data_args, *_ = DRArgumentParser().parse(["--data_dir", str(first), str(second)])
    assert data_args.data_dir == [str(first), str(second)]
    data_args, *_ = DRArgumentParser().parse(["--data_dir", str(first)])
    assert data_args.data_dir == [str(first)] and data_args.validation_dir is None
    for value in (str(first), [str(first), str(second)]):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"data_dir": value, "validation_dir": str(second)}))
        data_args, model_args, training_args, _ = DRArgumentParser().parse(
            ["--config", str(config)]
        )
        assert data_args.data_dir == (value if isinstance(value, list) else [value])
        assert data_args.validation_dir == [str(second)]
        written = resolved_config(data_args, model_args, training_args)
        assert written["data_dir"] == value and written["validation_dir"] == str(second)


def test_a_run_on_two_sources_saves_their_counts(two_sources, tmp_path):
    import json

    from conftest import tiny_config

    from dr_hf.config.parsing import config_from_dict
    from dr_hf.training.run import run_training

    first, second = two_sources
    values = tiny_config(first, tmp_path / "run", num_train_epochs=1)
    values["data_dir"] = [str(first), str(second)]
    run_training(*config_from_dict(values))
    counts = json.loads((tmp_path / "run" / "source_counts.json").read_text())
    assert set(counts["train"]) == set(counts["validation"]) == {first.name, second.name}
    total = sum(
        sum(grades) for split in ("train", "validation") for grades in counts[split].values()
    )
    assert total == 48
