import dataclasses
from typing import Optional

import pytest

from auden_kit.config import ConfigError, dump_yaml, from_dict, load_config


@dataclasses.dataclass
class Inner:
    lr: float = 0.1
    dims: tuple[int, ...] = (1, 2)


@dataclasses.dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    flag: bool = False
    maybe: Optional[int] = None
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_unknown_key_names_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'inner.lrr'.*did you mean 'lr'"):
        from_dict(Outer, {"inner": {"lrr": 1}})
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        from_dict(Outer, {"step": 3})


def test_types_are_checked_and_coerced():
    cfg = from_dict(Outer, {"steps": "5", "flag": "true", "inner": {"lr": 1, "dims": "4,5,6"}})
    assert cfg.steps == 5 and cfg.flag is True and cfg.inner.lr == 1.0 and cfg.inner.dims == (4, 5, 6)
    with pytest.raises(ConfigError, match="'steps' must be an integer"):
        from_dict(Outer, {"steps": "many"})
    with pytest.raises(ConfigError, match="'inner.dims\\[1\\]' must be an integer"):
        from_dict(Outer, {"inner": {"dims": [1, "b"]}})


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: run1\ninner:\n  lr: 0.5\n")
    cfg = load_config(Outer, f, ["inner.lr=0.25", "maybe=3", "inner.dims=[7, 8]"])
    assert cfg.name == "run1" and cfg.inner.lr == 0.25 and cfg.maybe == 3 and cfg.inner.dims == (7, 8)
    again = load_config(Outer, None, [])
    assert again.inner.lr == 0.1
    assert "lr: 0.5" in dump_yaml(load_config(Outer, f))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, f, ["inner.lr"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")
