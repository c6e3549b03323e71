"""bench/tofu_baselines.py runs every registered causal-LM method and says why each other one is not in its table."""

import tofu_baselines

from hf_unlearn import METHODS


def test_every_registered_method_is_run_or_excluded_with_a_reason():
    excluded = {name for name in METHODS if any(name == key or name.startswith(key + "_")
                                                for key in tofu_baselines.NOT_HERE)}  # fmt: skip
    assert set(tofu_baselines.LM_METHODS) | excluded == set(METHODS)
    assert not set(tofu_baselines.LM_METHODS) & excluded
    assert {"ga", "npo", "rmu", "idk_dpo", "altpo"} <= set(tofu_baselines.LM_METHODS)
    assert "a_amu_npo" in excluded and all(tofu_baselines.NOT_HERE.values())
