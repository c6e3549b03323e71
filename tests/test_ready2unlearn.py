"""Ready2Unlearn: the meta-gradient by hand and by finite differences, the outer terms' signs, gradient accumulation,
PEFT, clear errors, and the prepared model's card/manifest as the parent of a later unlearning run."""

import json
import math

import pytest
import torch
from conftest import training_args
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_unlearn import GAConfig, GATrainer
from hf_unlearn.fingerprint import verify_fingerprint
from hf_unlearn.manifest import MANIFEST_NAME, SALT_NAME, read_manifest, read_salt
from hf_unlearn.preparation import Ready2UnlearnConfig, Ready2UnlearnTrainer
from hf_unlearn.preparation.ready2unlearn import sample_seed


class OneWeight(torch.nn.Module):
    """logits = [w·x, 0]: ℓ(x, y=0) = softplus(−w·x), ℓ(x, y=1) = softplus(w·x)."""

    def __init__(self, w: float = 0.0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, pixel_values, labels=None):
        x = pixel_values.reshape(-1).to(torch.float64)
        return SequenceClassifierOutput(logits=torch.stack([self.w * x, torch.zeros_like(x)], -1))


class TinyMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()

    def forward(self, pixel_values, labels=None):
        return SequenceClassifierOutput(logits=self.net(pixel_values.double()))


def row(x, label):
    return {"pixel_values": torch.tensor(x, dtype=torch.float64).reshape(-1), "labels": label}


def make_trainer(tmp_path, model, train, revocable, stable=None, recovery=None, **config):
    args = Ready2UnlearnConfig(**training_args(tmp_path, **{"max_steps": 1, **config}))
    return Ready2UnlearnTrainer(model=model, args=args, train_dataset=train, revocable_dataset=revocable,
                                stable_dataset=stable, recovery_dataset=recovery)  # fmt: skip


def test_first_order_meta_gradient_by_hand(tmp_path):
    """One weight w = 0, α_in = α_re = 1, λ1 = λ2 = λ3 = 1, first order (θ' = θ + α·stopgrad(g)).

    With σ the sigmoid, dℓ(x, y=0)/dw = −x·σ(−w·x) and dℓ(x, y=1)/dw = x·σ(w·x). Rows: task (x=1, y=1), revocable
    (x=1, y=0), stable (x=2, y=1), recovery (x=2, y=0).
      task:    dℓ/dw at 0                              = 1·σ(0)                          = 0.5
      inner:   g = dℓ_rev/dw at 0 = −σ(0) = −0.5,  w' = 0 + 1·(−0.5)                      = −0.5
      λ1:      −dℓ_rev/dw at w' = +1·σ(0.5)                                               = 0.6224593
      λ2:      +dℓ_stable/dw at w' = 2·σ(2·(−0.5)) = 2·σ(−1) = 2·0.2689414                = 0.5378828
      relearn: g_re = dℓ_rec/dw at w' = −2·σ(−(−0.5)·2) = −2·σ(1) = −1.4621172,
               w'' = w' − 1·g_re = −0.5 + 1.4621172                                       = 0.9621172
      λ3:      −dℓ_rev/dw at w'' = σ(−0.9621172) = 1 / (1 + e^0.9621172) = 1 / 3.6172317   = 0.2764545
      total dL/dw = 0.5 + 0.6224593 + 0.5378828 + 0.2764545                               = 1.9367967
    """
    model = OneWeight(0.0)
    task, revocable, stable, recovery = row(1.0, 1), row(1.0, 0), row(2.0, 1), row(2.0, 0)
    trainer = make_trainer(tmp_path, model, [task], [revocable], [stable], [recovery], alpha_in=1.0, alpha_re=1.0,
                           revocable_loss_cap=float("inf"))  # fmt: skip
    model.train()
    trainer._meta_pending = True  # as at the start of a meta step
    loss = trainer.compute_loss(model, trainer._pad([task]))
    loss.backward()
    assert model.w.grad.item() == pytest.approx(1.9367967, abs=1e-6)
    # each unweighted term as logged: ℓ_rev(w') = softplus(0.5), ℓ_stable(w') = softplus(−1), ℓ_rev(w'') =
    # softplus(−0.9621172)
    terms = {k.split("/", 1)[1]: v[-1].item() for k, v in trainer._loss_terms["train"].items()}
    assert terms["revocable_after_unlearn"] == pytest.approx(math.log1p(math.exp(0.5)), abs=1e-6)
    assert terms["stable_after_unlearn"] == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert terms["revocable_after_relearn"] == pytest.approx(math.log1p(math.exp(-0.9621172)), abs=1e-6)
    assert terms["task"] == pytest.approx(math.log(2), abs=1e-6)  # logged as float32

    # With the default cap, log C = log 2 = 0.6931472: ℓ_rev(w') = 0.9740770 is above it, so the λ1 term adds no
    # gradient, while ℓ_rev(w'') = 0.3234 is below it and λ3 still counts: 1.9367967 − 0.6224593 = 1.3143374.
    model.w.grad = None
    trainer.args.revocable_loss_cap = None
    trainer._meta_pending = True
    trainer.compute_loss(model, trainer._pad([task])).backward()
    assert model.w.grad.item() == pytest.approx(1.3143374, abs=1e-6)


def test_clipped_simulated_relearning_by_hand(tmp_path):
    """The hand-worked case above with relearn_max_grad_norm = 1 (first order): the relearning gradient
    g_re = −1.4621172 is clipped as torch.nn.utils.clip_grad_norm_ clips it, g_re·min(1, 1/(|g_re| + 1e-6)):
      w'' = w' − 1·(−1.4621172 / 1.4621182) = −0.5 + 0.9999993                                 = 0.4999993
      λ3:  −dℓ_rev/dw at w'' = σ(−0.4999993) = 0.3775408
      total dL/dw = 0.5 + 0.6224593 + 0.5378828 + 0.3775408                                    = 2.0378830
    A norm above |g_re| leaves the step as it was (1.9367967)."""
    model = OneWeight(0.0)
    task, revocable, stable, recovery = row(1.0, 1), row(1.0, 0), row(2.0, 1), row(2.0, 0)
    trainer = make_trainer(tmp_path, model, [task], [revocable], [stable], [recovery], alpha_in=1.0, alpha_re=1.0,
                           revocable_loss_cap=float("inf"), relearn_max_grad_norm=1.0)  # fmt: skip
    model.train()
    for max_norm, expected in ((1.0, 2.0378830), (1.5, 1.9367967)):
        model.w.grad = None
        trainer.args.relearn_max_grad_norm = max_norm
        trainer._meta_pending = True
        trainer.compute_loss(model, trainer._pad([task])).backward()
        assert model.w.grad.item() == pytest.approx(expected, abs=1e-6)
        terms = {k.split("/", 1)[1]: v[-1].item() for k, v in trainer._loss_terms["train"].items()}
        w2 = 0.4999993 if max_norm == 1.0 else 0.9621172
        assert terms["revocable_after_relearn"] == pytest.approx(math.log1p(math.exp(-w2)), abs=1e-6)


def test_query_batch_meta_gradient_by_hand(tmp_path):
    """query_batch (MAML's support/query split): the inner ascent runs on the support row (x=1, y=0) and both ℓ(D_rev)
    of the outer loss on the query row (x=2, y=0). One weight w = 0, α_in = α_re = 1, λ1 = λ2 = λ3 = 1, first order;
    stable (x=2, y=1), recovery (x=2, y=0), no cap.
      inner:   g = dℓ_support/dw at 0 = −σ(0) = −0.5,  w' = −0.5                          (as without the split)
      λ1:      −dℓ_query/dw at w' = 2·σ(−(−0.5)·2) = 2·σ(1) = 2·0.7310586                 = 1.4621172
      λ2:      +dℓ_stable/dw at w' = 2·σ(−1)                                              = 0.5378828
      relearn: w'' = w' − dℓ_rec/dw at w' = −0.5 + 2·σ(1)                                 = 0.9621172
      λ3:      −dℓ_query/dw at w'' = 2·σ(−2·0.9621172) = 2·σ(−1.9242343)                  = 0.2547803
      meta dL/dw = 1.4621172 + 0.5378828 + 0.2547803                                      = 2.2547803
    Measured on the support row instead (no query), the same terms give 1.4367967 (the hand-worked case above less
    its task gradient 0.5)."""
    model = OneWeight(0.0)
    support, query, stable, recovery = row(1.0, 0), row(2.0, 0), row(2.0, 1), row(2.0, 0)
    trainer = make_trainer(tmp_path, model, [row(1.0, 1)], [support, query], [stable], [recovery], alpha_in=1.0,
                           alpha_re=1.0, revocable_loss_cap=float("inf"), query_batch=True)  # fmt: skip
    batches = [trainer._pad([r]) for r in (support, stable, recovery, query)]
    loss, terms = trainer.meta_objective(model, *batches)
    assert torch.autograd.grad(loss, model.w)[0].item() == pytest.approx(2.2547803, abs=1e-6)
    assert terms["revocable_after_unlearn"].item() == pytest.approx(math.log1p(math.exp(1.0)), abs=1e-6)
    assert terms["revocable_after_relearn"].item() == pytest.approx(math.log1p(math.exp(-1.9242343)), abs=1e-6)
    loss, _ = trainer.meta_objective(model, *batches[:3])
    assert torch.autograd.grad(loss, model.w)[0].item() == pytest.approx(1.4367967, abs=1e-6)

    # unlearn_rise: the λ1 term is −(ℓ_query(w') − ℓ_query(w)); its gradient adds +dℓ_query/dw at w = 0, −2·σ(0) = −1:
    # 2.2547803 − 1 = 1.2547803; ℓ_query(0) = softplus(0) = log 2 is logged as revocable_before_unlearn.
    trainer.args.unlearn_rise = True
    loss, terms = trainer.meta_objective(model, *batches)
    assert torch.autograd.grad(loss, model.w)[0].item() == pytest.approx(1.2547803, abs=1e-6)
    assert terms["revocable_before_unlearn"].item() == pytest.approx(math.log(2), abs=1e-6)


def test_query_batch_draws_disjoint_support_and_query_rows(tmp_path):
    """In training, each meta step's support and query batches come from one seeded draw and share no row; without
    query_batch the revocable batch is the draw's first rows, as before the option existed."""
    rows = [row(float(i + 1), 0) for i in range(6)]
    trainer = make_trainer(tmp_path, OneWeight(0.0), [row(1.0, 1)], rows, lambda2=0.0, meta_batch_size=3,
                           query_batch=True)  # fmt: skip
    seen = []
    trainer.meta_objective = lambda model, revocable, stable, recovery, query: (
        seen.append((revocable, query)) or (torch.zeros((), dtype=torch.float64), {}))
    trainer._meta_pending = True
    trainer.compute_loss(trainer.model, trainer._pad([row(1.0, 1)]))
    (support, query), = seen
    xs = [set(batch["pixel_values"].reshape(-1).tolist()) for batch in (support, query)]
    assert len(xs[0]) == len(xs[1]) == 3 and not xs[0] & xs[1]
    trainer.args.query_batch = False
    trainer._meta_pending = True
    trainer.compute_loss(trainer.model, trainer._pad([row(1.0, 1)]))
    assert seen[1][1] is None
    assert torch.equal(seen[1][0]["pixel_values"], support["pixel_values"])


def mlp_rows(seed, n, label_offset=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    return [{"pixel_values": x[i], "labels": (i + label_offset) % 3} for i in range(n)]


@pytest.mark.parametrize(("inner_steps", "relearn_max_grad_norm", "split"),
                         [(1, None, False), (2, None, False), (1, 0.05, False), (1, None, True)])  # fmt: skip
def test_second_order_meta_gradient_matches_finite_differences(tmp_path, inner_steps, relearn_max_grad_norm, split):
    """The second-order meta-gradient is the exact derivative of the meta loss as a function of θ: central differences
    (ε = 1e-6, float64) agree to 1e-6; the first-order gradient differs from it. With the relearning gradient clipped
    (a norm of 0.05, below the gradient's), the clipping coefficient is differentiated too; with `split`, a query batch
    and the λ1 term as the rise (query_batch, unlearn_rise)."""
    model = TinyMLP()
    train, revocable, stable, recovery = mlp_rows(0, 4), mlp_rows(1, 3), mlp_rows(2, 3, 1), mlp_rows(3, 3)
    trainer = make_trainer(tmp_path, model, train, revocable, stable, recovery, alpha_in=0.5, alpha_re=0.3,
                           inner_steps=inner_steps, meta_order="second", revocable_loss_cap=float("inf"),
                           relearn_max_grad_norm=relearn_max_grad_norm, query_batch=split,
                           unlearn_rise=split)  # fmt: skip
    batches = [trainer._pad(rows) for rows in (revocable, stable, recovery) + ((mlp_rows(4, 3),) if split else ())]
    params = [p for p in model.parameters()]
    loss, _ = trainer.meta_objective(model, *batches)
    analytic = torch.autograd.grad(loss, params)
    eps = 1e-6
    for param, grad in zip(params, analytic, strict=True):
        flat, expected = param.data.view(-1), grad.reshape(-1)
        for i in range(flat.numel()):
            original = flat[i].item()
            flat[i] = original + eps
            plus = trainer.meta_objective(model, *batches)[0].item()
            flat[i] = original - eps
            minus = trainer.meta_objective(model, *batches)[0].item()
            flat[i] = original
            assert (plus - minus) / (2 * eps) == pytest.approx(expected[i].item(), abs=1e-6)
    if relearn_max_grad_norm is not None:  # the clipping is active: without it the meta loss differs
        trainer.args.relearn_max_grad_norm = None
        assert abs(trainer.meta_objective(model, *batches)[0].item() - loss.item()) > 1e-3
        trainer.args.relearn_max_grad_norm = relearn_max_grad_norm
    trainer.args.meta_order = "first"
    first = torch.autograd.grad(trainer.meta_objective(model, *batches)[0], params)
    assert max((a - b).abs().max().item() for a, b in zip(first, analytic, strict=True)) > 1e-3


def test_second_order_runs_through_sdpa_attention(tmp_path, digits_data):
    """Second order differentiates through attention's backward, which the fused SDPA kernels cannot (a RuntimeError
    before the fix): the meta-gradient of a ViT with SDPA attention (the default) equals the eager-attention one."""
    from hf_unlearn.synthetic import build_tiny_image_classifier

    train, revocable = digits_data["retain"][:16], digits_data["forget"][:4]
    grads = {}
    for attention in ("sdpa", "eager"):
        model = build_tiny_image_classifier(seed=0)
        model.set_attn_implementation(attention)
        trainer = make_trainer(tmp_path, model, train, revocable, train[:4], revocable, alpha_in=0.5, alpha_re=0.5,
                               meta_order="second")  # fmt: skip
        batches = [trainer._pad(rows) for rows in (revocable, train[:4], revocable)]
        loss, _ = trainer.meta_objective(model, *batches)
        loss.backward()
        grads[attention] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert grads["sdpa"].abs().max() > 0
    torch.testing.assert_close(grads["sdpa"], grads["eager"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("weights", "term", "direction"),
    [((1, 0, 0), "revocable_after_unlearn", +1), ((0, 1, 0), "stable_after_unlearn", -1),
     ((0, 0, 1), "revocable_after_relearn", +1)],
)  # fmt: skip
def test_outer_terms_signs(tmp_path, weights, term, direction):
    """A small gradient step on the meta loss with only λ1 (resp. λ2, λ3) on raises the revocable loss after the
    simulated unlearning (resp. lowers the stable loss after it, raises the revocable loss after relearning)."""
    model = TinyMLP()
    train, revocable, stable, recovery = mlp_rows(0, 4), mlp_rows(1, 3), mlp_rows(2, 3, 1), mlp_rows(3, 3)
    lambdas = dict(zip(("lambda1", "lambda2", "lambda3"), weights, strict=True))
    trainer = make_trainer(tmp_path, model, train, revocable, stable, recovery, alpha_in=0.5, alpha_re=0.5,
                           revocable_loss_cap=float("inf"), **lambdas)  # fmt: skip
    batches = [trainer._pad(rows) for rows in (revocable, stable, recovery)]
    # every term is measured, whatever its weight: switch all on for measuring, keep the chosen weights for the step
    measure = {"lambda1": 1.0, "lambda2": 1.0, "lambda3": 1.0}
    loss, _ = trainer.meta_objective(model, *batches)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    trainer.args.__dict__.update(measure)
    before = trainer.meta_objective(model, *batches)[1][term].item()
    with torch.no_grad():
        for param, grad in zip(model.parameters(), grads, strict=True):
            param -= 0.05 * grad
    after = trainer.meta_objective(model, *batches)[1][term].item()
    assert direction * (after - before) > 1e-4


def weights(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


@pytest.mark.parametrize("options", [{}, {"query_batch": True, "unlearn_rise": True}], ids=["level", "query-rise"])
def test_gradient_accumulation_matches_the_large_batch(tmp_path, digits_data, options):
    """accumulation 2 × batch 2 gives the same SGD update as batch 4, meta step included (the meta loss is computed
    once per optimizer step and would count twice, or half, if it were scaled like a micro-batch loss); also with a
    query batch and the rise term."""
    from hf_unlearn.synthetic import build_tiny_image_classifier

    train, revocable = digits_data["retain"][:4], digits_data["forget"][:6]
    results = []
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model = build_tiny_image_classifier(seed=0)
        before = weights(model)
        trainer = make_trainer(tmp_path / f"acc{accumulation}", model, train, revocable,
                               per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                               meta_batch_size=3, optim="sgd", learning_rate=0.5, max_grad_norm=0,
                               lr_scheduler_type="constant", **options)  # fmt: skip
        trainer.train()
        logged = trainer.state.log_history[0]
        assert {"loss/task", "loss/revocable_after_unlearn", "loss/stable_after_unlearn",
                "loss/revocable_after_relearn"} <= set(logged)  # fmt: skip
        assert ("loss/revocable_before_unlearn" in logged) == bool(options)
        results.append((before, weights(model), logged))
    (before, large, logs_large), (_, accumulated, logs_accumulated) = results
    assert max((large[n] - before[n]).abs().max() for n in before) > 1e-3
    for name in large:
        assert torch.allclose(accumulated[name], large[name], atol=1e-6, rtol=0), name
    assert logs_accumulated["loss/revocable_after_unlearn"] == pytest.approx(logs_large["loss/revocable_after_unlearn"])


def test_meta_every_runs_the_meta_objective_on_every_kth_step(tmp_path, digits_data):
    """meta_every=2: the meta terms are logged for optimizer steps 0 and 2 only; evaluation is the task loss alone."""
    from hf_unlearn.synthetic import build_tiny_image_classifier

    args = Ready2UnlearnConfig(**training_args(tmp_path, max_steps=4, meta_every=2))
    rows = digits_data
    trainer = Ready2UnlearnTrainer(model=build_tiny_image_classifier(), args=args, train_dataset=rows["retain"][:16],
                                   revocable_dataset=rows["forget"][:4], eval_dataset=rows["test"][:8])
    trainer.train()
    steps = [e["step"] for e in trainer.state.log_history if "loss/revocable_after_unlearn" in e]
    assert steps == [1, 3]  # optimizer steps 0 and 2 (logged after they finish as steps 1 and 3)
    assert all("loss/task" in e for e in trainer.state.log_history if "loss" in e)
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_loss/task"], rel=1e-5)
    assert not any("revocable" in key for key in metrics)


def test_auxiliary_batches_are_seeded_per_step_and_rank():
    seeds = {sample_seed(0, "revocable", step, rank) for step in range(3) for rank in range(2)}
    assert len(seeds) == 6  # every (step, rank) draws its own rows
    assert sample_seed(0, "revocable", 1, 1) == sample_seed(0, "revocable", 1, 1)
    assert sample_seed(0, "revocable", 1, 1) != sample_seed(0, "stable", 1, 1)


@pytest.mark.parametrize("options", [{}, {"query_batch": True, "unlearn_rise": True}], ids=["level", "query-rise"])
def test_peft_only_adapter_weights_take_the_updates(tmp_path, make_model, tokenizer, qa_data, options):
    """A LoRA causal LM on question/answer rows: the meta step runs on the adapter weights only, the base stays."""
    peft = pytest.importorskip("peft")
    forget, retain = qa_data
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    args = Ready2UnlearnConfig(**training_args(tmp_path, max_steps=2, learning_rate=1e-2, **options))
    trainer = Ready2UnlearnTrainer(model=make_model(), args=args, train_dataset=forget + retain,
                                   revocable_dataset=forget, processing_class=tokenizer, peft_config=lora)  # fmt: skip
    before = weights(trainer.model)
    trainer.train()
    after = weights(trainer.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed)
    logged = trainer.state.log_history[0]
    assert logged["loss/revocable_after_unlearn"] > logged["loss/task"] - 1.0  # finite, measured terms
    assert all(math.isfinite(logged[k]) for k in logged if k.startswith("loss"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"alpha_in": 0.0}, "alpha_in=0"), ({"alpha_re": -1.0}, "alpha_re=-1.0 is negative"),
     ({"lambda2": -0.5}, "lambda2=-0.5 is negative"), ({"inner_steps": 0}, "inner_steps=0"),
     ({"meta_order": "third"}, "meta_order='third' is unknown"), ({"meta_every": 0}, "meta_every=0"),
     ({"meta_batch_size": 0}, "meta_batch_size=0"), ({"relearn_steps": -1}, "relearn_steps=-1"),
     ({"revocable_loss_cap": 0.0}, "revocable_loss_cap=0.0"),
     ({"relearn_max_grad_norm": 0.0}, "relearn_max_grad_norm=0.0: use a positive norm")],
)  # fmt: skip
def test_bad_config_values_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        Ready2UnlearnConfig(output_dir=str(tmp_path), **overrides)


def test_clear_errors_for_missing_or_mismatched_data(tmp_path, digits_data, qa_data, tokenizer):
    from hf_unlearn.synthetic import build_tiny_image_classifier

    train = digits_data["retain"][:8]
    with pytest.raises(ValueError, match="needs a revocable_dataset"):
        make_trainer(tmp_path, build_tiny_image_classifier(), train, None)
    with pytest.raises(ValueError, match="needs a revocable_dataset"):
        make_trainer(tmp_path, build_tiny_image_classifier(), train, [])
    with pytest.raises(ValueError, match="train_dataset is empty"):
        make_trainer(tmp_path, build_tiny_image_classifier(), [], train)
    with pytest.raises(ValueError, match="revocable_dataset holds 'qa' rows but train_dataset holds 'image' rows"):
        make_trainer(tmp_path, build_tiny_image_classifier(), train, qa_data[0])
    with pytest.raises(ValueError, match="Every training row is revocable"):
        make_trainer(tmp_path, build_tiny_image_classifier(), train, train)
    make_trainer(tmp_path, build_tiny_image_classifier(), train, train, lambda2=0.0)  # no stable term: fine
    with pytest.raises(ValueError, match="query_batch=True splits the revocable rows .* has 1 row: pass at least 2"):
        make_trainer(tmp_path, build_tiny_image_classifier(), train, train[:1], query_batch=True)


def test_default_stable_set_is_a_seeded_sample_without_revocable_rows(tmp_path, digits_data):
    from hf_unlearn.synthetic import build_tiny_image_classifier

    train, revocable = digits_data["forget"] + digits_data["retain"], digits_data["forget"]
    stable = [make_trainer(tmp_path, build_tiny_image_classifier(), train, revocable,
                           stable_sample_size=30).stable_dataset for _ in range(2)]  # fmt: skip
    assert len(stable[0]) == 30
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(*stable, strict=True))
    revocable_pixels = {tuple(r["pixel_values"].flatten().tolist()) for r in revocable}
    assert not any(tuple(r["pixel_values"].flatten().tolist()) in revocable_pixels for r in stable[0])


def test_prepared_model_card_and_a_later_ga_run_link_back(tmp_path, digits_data):
    """save_model writes a manifest naming the revocable group by salted fingerprint; a GA run started from the saved
    folder lists the preparation as request 1 of its lineage, and both fingerprints verify with the salt."""
    from transformers import ViTForImageClassification

    from hf_unlearn.synthetic import build_tiny_image_classifier

    train, revocable = digits_data["forget"] + digits_data["retain"], digits_data["forget"]
    prepared_dir = tmp_path / "prepared"
    trainer = make_trainer(prepared_dir, build_tiny_image_classifier(), train, revocable, max_steps=2,
                           revocable_description="one class of digits that may be withdrawn")  # fmt: skip
    trainer.train()
    trainer.save_model()
    manifest = read_manifest(prepared_dir)
    salt = read_salt(prepared_dir)
    prepared = manifest["requests"][0]
    assert prepared["kind"] == "preparation" and prepared["method"] == "ready2unlearn"
    assert prepared["fingerprint"]["num_examples"] == len(revocable)
    assert verify_fingerprint(revocable, salt, prepared["fingerprint"])
    assert not verify_fingerprint(revocable[1:], salt, prepared["fingerprint"])
    assert "loss/revocable_after_unlearn" in prepared["curves"]
    card = (prepared_dir / "README.md").read_text()
    assert "Ready2Unlearn" in card and prepared["fingerprint"]["hmac_sha256"] in card and salt not in card
    assert "image-classification" in card
    assert salt not in (prepared_dir / MANIFEST_NAME).read_text()
    # `hf-unlearn card` re-renders a prepared folder with the prepared model's card, not the unlearned one's
    from hf_unlearn.cli import main

    assert main(["card", str(prepared_dir), "--license", "mit"]) == 0
    again = (prepared_dir / "README.md").read_text()
    assert "Nothing has been removed from this model yet." in again and "license: mit" in again

    model = ViTForImageClassification.from_pretrained(prepared_dir)
    unlearned_dir = tmp_path / "unlearned"
    ga = GATrainer(model=model, args=GAConfig(**training_args(unlearned_dir, max_steps=1)), forget_dataset=revocable,
                   fingerprint_salt=salt)  # fmt: skip
    ga.train()
    ga.save_model()
    lineage = json.loads((unlearned_dir / MANIFEST_NAME).read_text())["requests"]
    assert [r["method"] for r in lineage] == ["ga", "ready2unlearn"]
    assert lineage[0]["request"] == 2 and lineage[1]["kind"] == "preparation"
    assert lineage[1]["fingerprint"] == prepared["fingerprint"] == lineage[0]["fingerprint"]
    card = (unlearned_dir / "README.md").read_text()
    assert "Ready2Unlearn (learning-time preparation" in card
    # the preparation is in the lineage but is not counted as a deletion request
    assert "This is the first deletion request served by this model's line; the line was prepared" in card
    assert "deletion requests" not in card
    assert (unlearned_dir / SALT_NAME).is_file()


def test_question_answer_card_holds_no_revocable_text(tmp_path, make_model, tokenizer, qa_data):
    forget, retain = qa_data
    args = Ready2UnlearnConfig(**training_args(tmp_path, max_steps=1))
    trainer = Ready2UnlearnTrainer(model=make_model(), args=args, train_dataset=forget + retain,
                                   revocable_dataset=forget, processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()
    written = (tmp_path / "README.md").read_text() + (tmp_path / MANIFEST_NAME).read_text()
    assert "text-generation" in written
    for row in forget:
        assert row["answer"] not in written and row["question"] not in written and row["person"] not in written
    assert verify_fingerprint(forget, read_salt(tmp_path), read_manifest(tmp_path)["requests"][0]["fingerprint"])


@pytest.mark.parametrize("options", ["level", "query-rise"])
def test_two_process_run_draws_per_rank_and_stays_in_step(tmp_path, options):
    """torchrun, 2 CPU processes (gloo): no deadlock, each rank's meta steps draw their own revocable rows, the
    replicas end with the same weights, the logged terms are all-reduced, and save_model writes the card once; also
    with a query batch and the rise term (each rank draws its support and query rows: 2 + 2)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_distributed import free_port

    script = Path(__file__).parent / "scripts" / "ddp_ready2unlearn.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script), str(tmp_path), options]  # fmt: skip
    root = str(Path(__file__).resolve().parents[1])  # this checkout's hf_unlearn, not another installed copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # read after save_model: writing the card kept the state
    assert len(ranks[0]["drawn"]) == 3 and ranks[0]["drawn"] != ranks[1]["drawn"]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], abs=1e-9)
    assert ranks[0]["terms"] == ranks[1]["terms"] and len(ranks[0]["terms"]) == 3
    assert [len(d) for d in ranks[0]["drawn"]] == [4 if options == "query-rise" else 2] * 3
    assert len(ranks[0]["before"]) == (3 if options == "query-rise" else 0) and ranks[0]["before"] == ranks[1]["before"]
    assert read_manifest(tmp_path)["requests"][0]["kind"] == "preparation"


def test_text_classifier_rows(tmp_path, tokenizer, qa_data):
    """Classification rows (`text`, `label`) are tokenised with the tokenizer; a tiny BERT classifier trains."""
    from transformers import BertConfig, BertForSequenceClassification

    forget, retain = qa_data
    rows = [{"text": r["question"], "label": i % 2} for i, r in enumerate(forget + retain)]
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    args = Ready2UnlearnConfig(**training_args(tmp_path, max_steps=2, learning_rate=1e-3))
    trainer = Ready2UnlearnTrainer(model=model, args=args, train_dataset=rows, revocable_dataset=rows[:8],
                                   processing_class=tokenizer)  # fmt: skip
    before = weights(model)
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    logged = trainer.state.log_history[0]
    assert {"loss/task", "loss/revocable_after_unlearn", "loss/stable_after_unlearn"} <= set(logged)
    trainer.save_model()
    assert "text-classification" in (tmp_path / "README.md").read_text()
