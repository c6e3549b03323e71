"""`bench/profile_step.py`: the profiled shares of a step add up and the multiplies dominate; the first-answer
projection can be switched off for the A/B run, and is switched back on after it."""

import tempfile

import profile_step
from versus_open_unlearning import build_tokenizer

from hf_unlearn import losses
from hf_unlearn.data import load_tofu


def test_shares_and_the_logits_to_keep_switch(tofu_path):
    tokenizer = build_tokenizer(tofu_path)
    rows = {"forget_dataset": [dict(r) for r in load_tofu("forget10", tofu_path)][:8],
            "retain_dataset": [dict(r) for r in load_tofu("retain90", tofu_path)][:8]}  # fmt: skip
    switch, seen = losses.takes_logits_to_keep, []
    with tempfile.TemporaryDirectory() as output_dir:
        found = profile_step.shares("grad_diff", tokenizer, rows, 2, output_dir)
        assert abs(sum(found.values()) - 1) < 1e-9 and found["matrix multiplies"] > 0.3
        assert all(0 <= share <= 1 for share in found.values())
        run = profile_step.trainer("grad_diff", tokenizer, rows, 1, output_dir)
        run.model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs.get("logits_to_keep")),
                                            with_kwargs=True)  # fmt: skip
        original = profile_step.trainer
        profile_step.trainer = lambda *args: run  # the A/B run on the hooked trainer
        try:
            assert profile_step.steps_per_second("grad_diff", tokenizer, rows, 1, output_dir, keep=False) > 0
        finally:
            profile_step.trainer = original
    assert seen and all(keep is None for keep in seen)  # switched off: the whole sequence was projected
    assert losses.takes_logits_to_keep is switch  # and back on afterwards
