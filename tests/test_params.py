import dataclasses
from pathlib import Path

import pytest
import yaml

from kagglecv.params import Params, ParamsError, load_params
from tests.conftest import REPO


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repository_params_load_and_everyday_knobs_are_top_level():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    raw = (REPO / "params.yaml").read_text().splitlines()
    for key in ("seed", "n_folds", "model", "img_size", "epochs", "batch_size", "lr"):
        assert any(line.startswith(f"{key}:") for line in raw), key


def test_unknown_key_is_named_with_suggestion(tmp_path):
    with pytest.raises(ParamsError, match=r"lrr: unknown key \(did you mean lr\?\)"):
        load_params(write(tmp_path, "lrr: 0.1\n"))


def test_wrong_type_and_yaml_exponent_string(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "lr: 3e-4\nepochs: ten\n"))
    message = str(err.value)
    assert "lr: expected a number, got '3e-4'" in message and "3.0e-4" in message
    assert "epochs: expected an integer, got 'ten'" in message
    assert "2 problem(s)" in message


def test_out_of_range_values_and_nested_keys_are_named(tmp_path):
    with pytest.raises(ParamsError) as err:
        load_params(write(tmp_path, "n_folds: 1\nlr: 0.0\ndata:\n  source: kagle\n  colour: 3\n"))
    message = str(err.value)
    assert "n_folds: 1 is too small; it must be at least 2" in message
    assert "lr: 0.0 is too small; it must be greater than 0.0" in message
    assert "data.source: 'kagle' is not allowed" in message
    assert "data.colour: unknown key" in message


def test_ints_are_accepted_as_floats_but_bools_are_not_numbers(tmp_path):
    assert load_params(write(tmp_path, "lr: 1\n")).lr == 1.0
    with pytest.raises(ParamsError, match="batch_size: expected an integer, got True"):
        load_params(write(tmp_path, "batch_size: yes\n"))


@pytest.mark.parametrize(
    ("text", "expected"), [("off", "off"), ("on", "on"), ("false", "off"), ("yes", "on"), ("fp16", "fp16")]
)
def test_amp_on_and_off_survive_yaml_booleans(tmp_path, text, expected):
    assert load_params(write(tmp_path, f"amp: {text}\n")).amp == expected  # YAML 1.1 reads off as false


def test_booleans_are_not_taken_for_choices_without_on_and_off(tmp_path):
    with pytest.raises(ParamsError, match=r"optimizer: False is not allowed"):
        load_params(write(tmp_path, "optimizer: off\n"))


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError, match="repository root"):
        load_params(tmp_path / "nope.yaml")


def keys_of(tree: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping, dotted (`data.layout`); lists and their items are values, not keys."""
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict) and key not in ("augment", "augment_test"):
            out |= keys_of(value, f"{prefix}{key}.")
    return out


def test_the_loaders_defaults_are_params_yaml_as_shipped(tmp_path):
    """One set of defaults: an empty params.yaml loads as the shipped one, and the shipped file sets every key."""
    shipped = load_params(REPO / "params.yaml")
    assert load_params(write(tmp_path, "{}\n")) == shipped == Params()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert keys_of(raw) == keys_of(dataclasses.asdict(Params()))  # every knob in the file, and nothing else


def test_every_knob_reruns_the_stages_that_read_it():
    """Every key of params.yaml is tracked by some stage besides check_params, so dvc repro sees its edits."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    tracked = {p for name, s in stages.items() if name != "check_params" for p in s.get("params", [])}
    untracked = set()
    for key in keys_of(dataclasses.asdict(Params())):
        parts = key.split(".")
        if not any(".".join(parts[:k]) in tracked for k in range(1, len(parts) + 1)):
            untracked.add(key)
    assert untracked == set(), f"no stage tracks {sorted(untracked)}"
