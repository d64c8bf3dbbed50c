import pytest

from lmops.params import ParamsError, load_params, validate


def test_defaults_validate_and_repo_params_load():
    assert validate({}).train.context == 256
    assert load_params("params.yaml").data.entities > 0


@pytest.mark.parametrize("raw, key", [
    ({"train": {"stepz": 3}}, "train.stepz"),                       # unknown key
    ({"train": {"steps": "many"}}, "train.steps"),                  # wrong type
    ({"train": {"lr": -1}}, "train.lr"),                            # bad value
    ({"data": {"recall_filler": [5, 2]}}, "data"),                  # inconsistent pair
    ({"train": {"arch": {"type": "gpt9"}}}, "train.arch.type"),     # unknown architecture
    ({"train": {"arch": {"hidden_size": 30, "heads": 4}}}, "train.arch"),
    ({"nonsense": {}}, "nonsense"),                                 # unknown section
])
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        validate(raw)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_duplicate_keys_are_refused(tmp_path):
    dup = tmp_path / "params.yaml"
    dup.write_text("train:\n  steps: 3\n  threads: 1\n  steps: 4\n")
    with pytest.raises(ParamsError, match="duplicate key 'steps'"):
        load_params(dup)
