"""Each loss against numbers worked out by hand (in the docstrings)."""

import math

import pytest
import torch

from hf_unlearn import losses
from hf_unlearn.losses import kl_divergence, mean_nll, npo_loss, sequence_logps, simnpo_loss, token_kl, token_logps

LN3 = math.log(3.0)


def test_sequence_logps_counts_answer_tokens_only():
    """Causal LM, labels [-100, 0, 1]: position 0 predicts label 0 with p = 1/2 (logits [0, 0]), position 1 predicts
    label 1 with p = 3/4 (logits [0, ln 3]); position 2's logits predict nothing. Sum = ln(1/2) + ln(3/4) = −0.98083,
    2 tokens, mean NLL 0.490415."""
    logits = torch.tensor([[[0.0, 0.0], [0.0, LN3], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 0, 1]])
    sum_logps, num_tokens = sequence_logps(logits, labels)
    assert sum_logps.item() == pytest.approx(math.log(0.5) + math.log(0.75), abs=1e-6)
    assert num_tokens.tolist() == [2]
    assert mean_nll(sum_logps, num_tokens).item() == pytest.approx(0.490415, abs=1e-6)


def test_sequence_logps_ignores_prompt_and_padding():
    """The prompt's label (-100) and the padding label (-100) add nothing: only ln(3/4) is left."""
    logits = torch.tensor([[[9.0, 1.0], [0.0, LN3], [3.0, 3.0], [1.0, 2.0]]])
    labels = torch.tensor([[5, -100, 1, -100]])
    sum_logps, num_tokens = sequence_logps(logits, labels)
    assert sum_logps.item() == pytest.approx(math.log(0.75), abs=1e-6) and num_tokens.item() == 1


def test_sequence_logps_classifier():
    """Classifier logits [0, ln 3], label 1: log p = ln(3/4), one 'token'."""
    sum_logps, num_tokens = sequence_logps(torch.tensor([[0.0, LN3]]), torch.tensor([1]))
    assert sum_logps.item() == pytest.approx(math.log(0.75), abs=1e-6) and num_tokens.item() == 1


def test_npo_loss_by_hand():
    """log p_θ = −2, log p_θ0 = −1, β = 0.1:
    −(2/0.1)·log σ(−0.1·(−1)) = −20·log σ(0.1) = −20·(−0.6443967) = 12.88793."""
    loss = npo_loss(torch.tensor([-2.0]), torch.tensor([-1.0]), beta=0.1)
    assert loss.item() == pytest.approx(12.887934, abs=1e-5)


def test_npo_loss_starts_at_2_ln2_over_beta():
    """At θ = θ_0 the log-ratio is 0, so the loss is −(2/β)·ln(1/2) = 2·ln 2/β; averaged over examples."""
    loss = npo_loss(torch.tensor([-3.0, -7.0]), torch.tensor([-3.0, -7.0]), beta=0.5)
    assert loss.item() == pytest.approx(4 * math.log(2), abs=1e-6)


def test_simnpo_loss_by_hand():
    """Mean-token log p = −1, β = 2, δ = 0.5: −(2/2)·log σ(2·1 − 0.5) = −log σ(1.5) = −ln 0.8175745 = 0.2014133."""
    loss = simnpo_loss(torch.tensor([-1.0]), beta=2.0, delta=0.5)
    assert loss.item() == pytest.approx(0.2014133, abs=1e-6)


def test_kl_divergence_by_hand():
    """p_ref = (1/2, 1/2), p_θ = (1/4, 3/4) at the one answer position:
    KL = ½ ln(½/¼) + ½ ln(½/¾) = ½(ln 2 + ln 2/3) = 0.1438410. The masked position adds nothing."""
    reference = torch.tensor([[[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]]])
    policy = torch.tensor([[[0.0, LN3], [0.0, 9.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, -100]])
    kl = kl_divergence(reference, policy, labels)
    assert kl.item() == pytest.approx(0.5 * (math.log(2) + math.log(2 / 3)), abs=1e-6)
    assert kl_divergence(policy, policy, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_token_logps_by_hand(monkeypatch):
    """Vocabulary of 2. Row 1, labels [-100, 0, -100, 1]: logits [0, 0] predict label 0 with p = ½, the next label is
    -100 (log-prob 0, masked), logits [ln 3, 0] predict label 1 with p = ¼; the last logits predict nothing. Row 2,
    labels [5, 1, 0, 1]: [ln 3, 0] → label 1, p = ¼; [0, 0] → label 0, p = ½; [0, ln 3] → label 1, p = ¾.
    bf16 logits give float32 log-probs (those of the rounded logits); one example at a time changes nothing."""
    logits = torch.tensor([[[0.0, 0.0], [0.0, LN3], [LN3, 0.0], [9.0, 9.0]],
                           [[LN3, 0.0], [0.0, 0.0], [0.0, LN3], [1.0, 2.0]]])  # fmt: skip
    labels = torch.tensor([[-100, 0, -100, 1], [5, 1, 0, 1]])
    logps, mask = token_logps(logits, labels)
    assert mask.tolist() == [[True, False, True], [True, True, True]]
    expected = [[math.log(1 / 2), 0.0, math.log(1 / 4)], [math.log(1 / 4), math.log(1 / 2), math.log(3 / 4)]]
    assert logps.dtype == torch.float32 and logps.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    half, _ = token_logps(logits.bfloat16(), labels)
    assert half.dtype == torch.float32 and half.tolist() == [pytest.approx(row, abs=1e-2) for row in expected]
    assert torch.allclose(half, token_logps(logits.bfloat16().float(), labels)[0], atol=1e-6)
    monkeypatch.setattr(losses, "_rows_at_once", lambda logits: 1)
    assert torch.allclose(token_logps(logits, labels)[0], logps, atol=1e-6)


def test_token_kl_by_hand():
    """Vocabulary of 2. Row 1, labels [-100, 1, -100]: p_ref = (½, ½), p = (¼, ¾) at the answer position,
    KL = ½ ln(½/¼) + ½ ln(½/¾) = 0.1438410, then 0 at the -100 position. Row 2, labels [-100, 0, 1]: p_ref = (¾, ¼),
    p = (½, ½): KL = ¾ ln(3/2) + ¼ ln(1/2) = 0.1308120, then identical distributions: 0. Keeping only token 0's term
    (SIU's k_v) leaves ½ ln 2 = 0.3465736 in row 1. bf16 logits give float32."""
    reference = torch.tensor([[[0.0, 0.0], [9.0, 0.0], [0.0, 0.0]], [[LN3, 0.0], [0.0, 0.0], [5.0, 1.0]]])
    policy = torch.tensor([[[0.0, LN3], [0.0, 9.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[-100, 1, -100], [-100, 0, 1]])
    kl = token_kl(reference, policy, labels)
    expected = [[0.5 * math.log(2) + 0.5 * math.log(2 / 3), 0.0], [0.75 * math.log(1.5) + 0.25 * math.log(0.5), 0.0]]
    assert kl.dtype == torch.float32 and kl.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    kept = token_kl(reference, policy, labels, vocab_keep=torch.tensor([1.0, 0.0]))
    assert kept[0, 0].item() == pytest.approx(0.5 * math.log(2), abs=1e-6)
    half = token_kl(reference.bfloat16(), policy.bfloat16(), labels)
    assert half.dtype == torch.float32 and half.tolist() == [pytest.approx(row, abs=1e-2) for row in expected]


def test_nll_reduction_by_hand():
    """Answers of 1 and 3 tokens with summed log-probs −2 and −9: per example the NLLs are 2 and 3, mean 2.5 (each
    answer weighs the same); over the batch's tokens 11 / 4 = 2.75 (open-unlearning's and TOFU's reduction)."""
    from types import SimpleNamespace

    from hf_unlearn.trainer import UnlearningTrainer

    def nll(reduction):
        trainer = SimpleNamespace(args=SimpleNamespace(nll_reduction=reduction),
                                  answer_logps=lambda model, batch: (torch.tensor([-2.0, -9.0]), torch.tensor([1, 3])))
        return UnlearningTrainer.answer_nll(trainer, None, {}).item()

    assert nll("example") == pytest.approx(2.5)
    assert nll("token") == pytest.approx(2.75)


def test_answer_logps_projects_only_from_the_first_answer_and_gives_the_full_numbers():
    """Prompts of 3 and 5 tokens: the vocabulary projection keeps the last T − 2 positions (from the one predicting the
    earliest answer token), for a plain and a PEFT model, in training and in evaluation alike, and the log-probs equal
    those of all positions' logits."""
    from types import SimpleNamespace

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_unlearn.evaluation.probability import token_statistics
    from hf_unlearn.losses import logits_to_keep
    from hf_unlearn.trainer import UnlearningTrainer

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    ids = torch.randint(1, 50, (2, 9))
    labels = ids.clone()
    labels[0, :3] = labels[1, :5] = -100
    labels[0, 7:] = -100  # padding
    batch = {"input_ids": ids, "attention_mask": (labels != -100) | (torch.arange(9) < 5), "labels": labels}
    for model in (LlamaForCausalLM(config), get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2))):
        assert logits_to_keep(model, labels) == {"logits_to_keep": 7}
        kept = UnlearningTrainer.answer_logps(SimpleNamespace(), model, batch)
        full = sequence_logps(model(input_ids=ids, attention_mask=batch["attention_mask"]).logits, labels)
        assert torch.allclose(kept[0], full[0], atol=1e-5) and torch.equal(kept[1], full[1])
        rows = [{"input_ids": ids[i, :n].tolist(), "labels": labels[i, :n].tolist()} for i, n in enumerate((7, 9))]
        calls = []
        model.register_forward_pre_hook(lambda _, args, kwargs, calls=calls: calls.append(kwargs.get("logits_to_keep")),
                                        with_kwargs=True)  # fmt: skip
        scored = token_statistics(model, rows, batch_size=2, pad_token_id=0, min_k_plus_plus=False)
        assert calls == [7] and torch.allclose(scored["sum_logps"], full[0], atol=1e-5)
    assert logits_to_keep(model, torch.tensor([1, 0])) == {}  # a classifier's labels
