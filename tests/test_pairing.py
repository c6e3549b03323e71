"""Forget/retain pairing: one epoch per forget pass; retain draws depend on (seed, epoch, rank) only."""

import torch

from hf_unlearn import ForgetRetainDataset, UnlearningCollator

FORGET = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]} for _ in range(10)]
RETAIN = [{"input_ids": [4, 5 + i], "labels": [-100, 5 + i]} for i in range(25)]


def test_epoch_is_one_pass_over_forget_and_draws_are_deterministic():
    a = ForgetRetainDataset(FORGET, RETAIN, seed=7, rank=0)
    b = ForgetRetainDataset(FORGET, RETAIN, seed=7, rank=0)
    assert len(a) == len(FORGET)
    assert torch.equal(a.retain_indices(0), b.retain_indices(0))
    assert [a[i]["retain_index"] for i in range(10)] == a.retain_indices(0).tolist()
    assert a[3]["forget"] is FORGET[3] and a[3]["retain"] is RETAIN[a[3]["retain_index"]]


def test_ranks_epochs_and_seeds_draw_differently():
    base = ForgetRetainDataset(FORGET, RETAIN, seed=7, rank=0).retain_indices(0)
    assert not torch.equal(base, ForgetRetainDataset(FORGET, RETAIN, seed=7, rank=1).retain_indices(0))
    assert not torch.equal(base, ForgetRetainDataset(FORGET, RETAIN, seed=7, rank=0).retain_indices(1))
    assert not torch.equal(base, ForgetRetainDataset(FORGET, RETAIN, seed=8, rank=0).retain_indices(0))


def test_draws_do_not_depend_on_global_rng_or_access_order():
    a = ForgetRetainDataset(FORGET, RETAIN, seed=1, rank=0)
    a.set_epoch(2)
    first = [a[i]["retain_index"] for i in reversed(range(10))]
    torch.manual_seed(1234)
    b = ForgetRetainDataset(FORGET, RETAIN, seed=1, rank=0)
    b.set_epoch(2)
    assert [b[i]["retain_index"] for i in reversed(range(10))] == first


def test_without_replacement_and_cycling_when_retain_is_smaller():
    big = ForgetRetainDataset(FORGET, RETAIN, seed=0).retain_indices(0)
    assert len(set(big.tolist())) == len(FORGET)  # no retain example twice within one epoch
    small = ForgetRetainDataset(FORGET, RETAIN[:4], seed=0).retain_indices(0)
    assert sorted(small[:4].tolist()) == [0, 1, 2, 3] and sorted(small[4:8].tolist()) == [0, 1, 2, 3]


def test_with_replacement_repeats_draws_and_stays_deterministic():
    """open-unlearning's sampling: 10 draws from 4 retain rows with replacement. Over 20 seeds some epoch draws one
    row more than the cycle's ceil(10/4) = 3 times (impossible without replacement); each draw is seeded."""
    def draws(seed):
        return ForgetRetainDataset(FORGET, RETAIN[:4], seed=seed, replacement=True).retain_indices(0)

    assert torch.equal(draws(3), draws(3))
    assert any(torch.bincount(draws(seed), minlength=4).max() > 3 for seed in range(20))
    assert all(0 <= i < 4 for seed in range(20) for i in draws(seed).tolist())


def test_collator_pads_each_part():
    collator = UnlearningCollator(pad_token_id=0)
    dataset = ForgetRetainDataset(FORGET[:2], RETAIN, seed=0)
    batch = collator([dataset[0], dataset[1]])
    assert batch["forget"]["input_ids"].shape == (2, 3)
    assert batch["retain"]["input_ids"].shape == (2, 2)
    assert batch["forget_index"].tolist() == [0, 1]
    ragged = collator([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [7], "labels": [7]}])
    assert ragged["input_ids"].tolist() == [[1, 2, 3], [7, 0, 0]]
    assert ragged["labels"].tolist() == [[-100, 2, 3], [7, -100, -100]]
    scalar = collator([{"input_ids": [1, 2], "labels": 1}, {"input_ids": [3], "labels": 0}])
    assert scalar["labels"].tolist() == [1, 0]
