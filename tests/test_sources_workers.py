"""The `workers` setting of SourceConfig: bounded, defaulting to the usable cores."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vce_stream.errors import ConfigError
from vce_stream.sources import SourceConfig


def test_workers_default_to_the_cores_this_process_may_use():
    assert SourceConfig().workers == len(os.sched_getaffinity(0))


@given(st.integers(1, 256))
def test_workers_within_bounds_are_kept(n):
    assert SourceConfig(workers=n).workers == n


@pytest.mark.parametrize("bad", [0, -1, 257, 10**9, 2.5, "4", True])
def test_workers_out_of_bounds_are_a_one_line_config_error(bad):
    with pytest.raises(ConfigError, match=r"source.workers must be a whole number from 1 to 256") as info:
        SourceConfig(workers=bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("data,message", [({"workers": 0}, "from 1 to 256"), ({"workers": "many"}, "whole number"), ({"workers": 300}, "from 1 to 256")])
def test_a_config_file_with_bad_workers_is_refused_in_one_line(data, message):
    from vce_stream.config import from_dict

    with pytest.raises(ConfigError, match=message) as info:
        from_dict(SourceConfig, data)
    assert "\n" not in str(info.value)
    assert from_dict(SourceConfig, {"workers": 3}).workers == 3
