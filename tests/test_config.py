import pytest

from vce_stream.config import from_dict, load_yaml, to_dict
from vce_stream.postprocess.config import PostprocessConfig, TemporalConfig, override_thresholds
from vce_stream.errors import ConfigError
from vce_stream.labels import LABELS


def test_from_dict_builds_nested_tree_and_round_trips():
    cfg = from_dict(PostprocessConfig, {"thresholds": [0.2] * 17, "temporal": {"window": 5, "gap": 2}, "order": "time"})
    assert cfg.temporal == TemporalConfig(window=5, gap=2)
    assert cfg.thresholds_for(17) == (0.2,) * 17
    assert from_dict(PostprocessConfig, to_dict(cfg)) == cfg


def test_unknown_key_is_an_error_naming_where():
    with pytest.raises(ConfigError, match=r"postprocess.temporal: unknown key\(s\) \['windw'\]"):
        from_dict(PostprocessConfig, {"temporal": {"windw": 5}}, where="postprocess")


@pytest.mark.parametrize("bad", [{"window": 4}, {"window": 0}, {"gap": -1}, {"min_len": 0}, {"window": "7"}])
def test_invalid_temporal_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        from_dict(TemporalConfig, bad)


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)


def test_override_thresholds_forms():
    base = (0.5,) * 17
    assert override_thresholds(base, "0.3", LABELS) == (0.3,) * 17
    per_label = override_thresholds(base, "polyp=0.2, ulcer=0.1", LABELS)
    assert per_label[LABELS.index("polyp")] == 0.2 and per_label[LABELS.index("ulcer")] == 0.1
    assert per_label[0] == 0.5
    assert override_thresholds(base, ",".join(["0.7"] * 17), LABELS) == (0.7,) * 17
    for bad in ["0.1,0.2", "polip=0.2", "x", "1.5"]:
        with pytest.raises(ConfigError):
            override_thresholds(base, bad, LABELS)


def test_command_line_options_apply_last_and_are_checked():
    from vce_stream.postprocess.config import with_command_line

    base = PostprocessConfig(thresholds=0.5)
    cfg = with_command_line(base, LABELS, thresholds="polyp=0.2", order="time", segmentation="label")
    assert cfg.order == "time" and cfg.segmentation == "label"
    assert cfg.thresholds_for(17)[LABELS.index("polyp")] == 0.2 and cfg.temporal == base.temporal
    assert with_command_line(base, LABELS) == base
    with pytest.raises(ConfigError, match="3 thresholds given for 17 labels"):
        with_command_line(PostprocessConfig(thresholds=(0.5, 0.5, 0.5)), LABELS)


def test_a_dataclass_check_names_the_file_it_came_from():
    with pytest.raises(ConfigError, match=r"^run.yaml: postprocess.temporal: temporal.window must be an odd number"):
        from_dict(PostprocessConfig, {"temporal": {"window": 4}}, where="run.yaml: postprocess")


def test_merge_nested_overrides_only_the_keys_named():
    from vce_stream.config import merge_nested

    bundle = to_dict(PostprocessConfig(temporal=TemporalConfig(window=9, gap=3)))
    merged = from_dict(PostprocessConfig, merge_nested(bundle, {"temporal": {"gap": 1}, "order": "time"}))
    assert merged.temporal == TemporalConfig(window=9, gap=1) and merged.order == "time"
