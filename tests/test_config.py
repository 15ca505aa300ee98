import pytest

from fedmm.config import RunConfig, from_dict, load_config, set_key, to_dict, to_toml


def test_defaults_presets_toml_and_overrides_compose(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('seed = 4\n[fed]\nrounds = 5\nstrategy = "fedavg"\n[train]\nlr = 0.01\n')
    cfg = load_config(toml, ["fed.rounds=7", "fed.kd=false", "data.sample_missing=[0.1, 0.2, 0.0]"], "smoke")
    assert cfg.seed == 4 and cfg.fed.strategy == "fedavg" and cfg.train.lr == 0.01
    assert cfg.fed.rounds == 7  # the override wins over the file
    assert cfg.fed.kd is False and cfg.data.sample_missing == [0.1, 0.2, 0.0]
    assert cfg.data.n_clients == 6  # from the smoke preset


def test_toml_round_trip(tmp_path):
    cfg = load_config(None, ["model.fusion=concat", "train.kd_weight=0.5"], "smoke")
    (tmp_path / "r.toml").write_text(to_toml(cfg))
    assert load_config(tmp_path / "r.toml") == cfg
    assert from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize("item,err", [("fed.nope=1", KeyError), ("nope.rounds=1", KeyError),
                                      ("fed.rounds=abc", ValueError), ("fed.kd=maybe", ValueError),
                                      ("fed", KeyError), ("fedrounds", ValueError)])
def test_bad_overrides_fail_clearly(item, err):
    with pytest.raises(err):
        load_config(None, [item] if "=" in item or item == "fedrounds" else [item + "=1"])


def test_int_value_for_float_field_is_stored_as_float():
    cfg = RunConfig()
    set_key(cfg, "train.lr", 1)
    assert isinstance(cfg.train.lr, float)
