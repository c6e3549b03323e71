"""Shared maths of every method: answer-token log-probabilities and the baselines' losses as pure functions.

Each function is tested once against numbers worked out by hand (tests/test_losses.py). Methods call these; they
never recompute log-probabilities themselves.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def align_logits_and_labels(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair each logit row with the label it predicts.

    Causal LM (`labels` is `[B, T]`): position t predicts token t+1, so logits drop the last position and labels the
    first. Classifier (`labels` is `[B]`): one prediction per example, returned as `[B, 1, C]` and `[B, 1]`.
    """
    if labels.dim() == 1:
        return logits.unsqueeze(1), labels.unsqueeze(1)
    return logits[:, :-1, :], labels[:, 1:]


def logits_to_keep(model, labels: torch.Tensor) -> dict:
    """`{"logits_to_keep": k}` for a causal LM that takes it: the last `k` positions, from the one that predicts the
    batch's earliest answer token, so the vocabulary projection skips the prompts (about 40% of a TOFU row); `{}` for
    a classifier (`labels` `[B]`) or a model without the argument. Pair the logits with `kept_labels`."""
    if labels.dim() != 2 or not takes_logits_to_keep(model):
        return {}
    first_answer = int((labels != IGNORE_INDEX).float().argmax(-1).min())
    return {"logits_to_keep": labels.shape[-1] - max(first_answer - 1, 0)}


def kept_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The labels of the positions `logits` kept (all of them for a classifier's `[B]` labels)."""
    return labels if labels.dim() != 2 else labels[:, labels.shape[-1] - logits.shape[1]:]


def takes_logits_to_keep(model) -> bool:
    """Whether the causal LM under the wrappers (DDP, DeepSpeed, PEFT) has `logits_to_keep` in its forward."""
    while hasattr(model, "module"):  # DDP / DeepSpeed engines
        model = model.module
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(target.forward).parameters


def _wide(tensor: torch.Tensor) -> torch.Tensor:
    """At least float32: half-precision logits are upcast, float64 (exact derivative checks) is kept."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _rows_at_once(logits: torch.Tensor) -> int:
    """How many examples of `[B, T, V]` logits to take at a time: float32 temporaries of at most 2**24 elements
    (64 MiB), never a whole `[B, T, V]` copy (a classifier's small `[B, 1, C]` goes at once)."""
    return max(1, 2**24 // max(math.prod(logits.shape[1:]), 1))


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token, in float32 (float64 for float64 logits), and the mask of scored positions.

    Causal LM (`labels` `[B, T]`): logits at position t predict the label at t+1, so both are `[B, T-1]`; classifier
    (`labels` `[B]`): `[B, 1]`. Positions whose label is -100 (prompt, padding) are False in the mask and 0 in the
    log-probs. Computed as `logit[label] − logsumexp(logits)`, a few examples at a time.
    """
    logits, labels = align_logits_and_labels(logits, labels)
    mask = labels != IGNORE_INDEX
    index = labels.masked_fill(~mask, 0).unsqueeze(-1)
    step = _rows_at_once(logits)
    logps = torch.cat([_wide(rows.gather(-1, i).squeeze(-1)) - _wide(rows).logsumexp(-1)
                       for rows, i in zip(logits.split(step), index.split(step), strict=True)])  # fmt: skip
    return logps.masked_fill(~mask, 0), mask


def token_kl(
    reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, vocab_keep: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(p_ref ‖ p) at each position that predicts a label (aligned as `token_logps`), in float32: `[B, T-1]`, 0 where
    the label is -100. `vocab_keep` [V], when given, weighs each vocabulary term of the sum (SIU's k_v)."""
    reference_logits, aligned = align_logits_and_labels(reference_logits, labels)
    logits, _ = align_logits_and_labels(logits, labels)
    step, kl = _rows_at_once(logits), []
    for reference, rows in zip(reference_logits.split(step), logits.split(step), strict=True):
        reference = _wide(reference).log_softmax(-1)
        terms = reference.exp() * (reference - _wide(rows).log_softmax(-1))
        kl.append((terms if vocab_keep is None else terms * vocab_keep.to(terms)).sum(-1))
    return torch.cat(kl).masked_fill(aligned == IGNORE_INDEX, 0)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example sum of answer-token log-probabilities and the number of answer tokens.

    Positions whose label is -100 (prompt, padding) are not counted. Returns `(sum_logps [B], num_tokens [B])`.
    """
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)


def mean_nll(sum_logps: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    """Per-example mean answer-token negative log-likelihood, ℓ(x) = −log p(y|x) / |y|."""
    return -sum_logps / num_tokens.clamp(min=1)


def npo_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO forget loss (Zhang et al. 2024, arXiv 2404.05868): −(2/β)·mean log σ(−β·(log p_θ(y|x) − log p_θ0(y|x)))."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (policy_logps - reference_logps)).mean()


def simnpo_loss(mean_token_logps: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """SimNPO forget loss (Fan et al. 2024, arXiv 2410.07163): −(2/β)·mean log σ(−β·(log p_θ(y|x)/|y|) − δ)."""
    return -(2.0 / beta) * F.logsigmoid(-beta * mean_token_logps - delta).mean()


def kl_divergence(reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p_ref ‖ p_θ) averaged over answer positions (those whose label is not -100). Returns `[B]`."""
    num_tokens = (align_logits_and_labels(logits, labels)[1] != IGNORE_INDEX).sum(-1)
    return token_kl(reference_logits, logits, labels).sum(-1) / num_tokens.clamp(min=1)


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """L2-normalised `[B, d]` representation of `[B, T, d]` hidden states: the mean over non-padding tokens (`mean`),
    the first token (`cls`), or the last non-padding token (`last`, right-padded rows)."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    elif pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "last":
        last = (attention_mask.sum(1) - 1).clamp(min=0)
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
    else:
        raise ValueError(f"pooling={pooling!r} is unknown: use 'mean', 'cls' or 'last'.")
    return F.normalize(pooled.float(), dim=-1)


def contrastive_unlearning_loss(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_mask: torch.Tensor,
    negative_mask: torch.Tensor,
    temperature: float,
    anchor_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeepCUT's forget term (He et al. 2025, arXiv 2503.14900), over L2-normalised `anchors` [A, d] (forget) and
    `candidates` [C, d] (retain): mean over anchors of −log Σ_{p∈P(a)} e^{s(a,p)/τ} / Σ_{k∈P(a)∪N(a)} e^{s(a,k)/τ}.

    `positive_mask`/`negative_mask` [A, C] give P(a) (pulled toward: other classes) and N(a) (pushed away: the
    anchor's class). `anchor_negatives` [A] are extra negative similarities (the anchor's frozen representation
    `s(z_a(θ), z_a(θ_0))`, the fallback when N(a) is empty). Anchors with no positive are left out of the mean.
    """
    similarity = anchors.float() @ candidates.float().T / temperature
    positives = similarity.masked_fill(~positive_mask, float("-inf")).logsumexp(-1)
    denominator = similarity.masked_fill(~(positive_mask | negative_mask), float("-inf"))
    if anchor_negatives is not None:
        denominator = torch.cat([denominator, anchor_negatives.float().unsqueeze(-1) / temperature], dim=-1)
    losses = denominator.logsumexp(-1) - positives
    has_positive = positive_mask.any(-1)
    return losses[has_positive].mean() if has_positive.any() else similarity.sum() * 0.0


def dual_masked_kl(
    reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, token_mask: torch.Tensor,
    vocab_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """SIU's Dual Masked KL (Li et al. 2024, arXiv 2405.12523, eq. 3), a scalar:

        L_DMK = (1/Z) Σ_t (1 − m_t) Σ_v k_v · p_0(v|·) · [log p_0(v|·) − log p_θ(v|·)]

    over answer positions t (labels not -100), with the causal shift (position t−1's logits predict label t).
    `token_mask` [B, T] is m_t on label positions (1/True: excluded, e.g. a made-up name); `vocab_keep` [V] is k_v
    (0 on the concept name's token ids), applied after the softmax with no renormalisation. Z is the number of answer
    positions with m_t = 0 in the batch (a token mean over the batch).
    """
    keep = (align_logits_and_labels(logits, labels)[1] != IGNORE_INDEX) & ~token_mask[:, 1:].bool()
    return (token_kl(reference_logits, logits, labels, vocab_keep) * keep).sum() / keep.sum().clamp(min=1)


def gaussianise(losses: torch.Tensor, k: float = 2.0) -> torch.Tensor:
    """A-AMU's Gaussianising transform (Khan 2025, arXiv 2507.09786) of per-example losses `[n] → [n]`:
    `u = log(1 + ℓ)`, a smooth empirical CDF `F_i = (1/n) Σ_j σ(k · ReLU(u_i − u_j))`, then the probit `Φ⁻¹(F_i)`.

    The j = i term is σ(0) = 1/2 and every term is in [1/2, 1), so `F_i ∈ [1/2, 1)` and the result is finite and
    >= 0: 0 where the losses are all alike (a memorised set), spread out where they differ (never-seen examples).
    """
    u = torch.log1p(losses.float())
    cdf = torch.sigmoid(k * F.relu(u.unsqueeze(1) - u.unsqueeze(0))).mean(1)
    return torch.special.ndtri(cdf)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Squared maximum mean discrepancy of two 1-D samples with the Gaussian kernel `exp(−(a − b)² / (2σ²))`, the
    biased (V-statistic) estimate `mean K(x, x') + mean K(y, y') − 2 · mean K(x, y)`: 0 for identical samples."""
    x, y = x.float().reshape(-1, 1), y.float().reshape(-1, 1)

    def kernel(a, b):  # squared differences directly: cdist's gradient is NaN at distance 0
        return torch.exp(-(a - b.T).pow(2) / (2 * sigma**2))

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def info_nce(anchors: torch.Tensor, partners: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pair SimCLR InfoNCE (NT-Xent, Chen et al. 2020) of `anchors` [N, d] and `partners` [N, d]: the 2N views are
    L2-normalised, (a_i, b_i) is the positive pair and the other 2N − 2 views are the negatives. Returns `[N]`, each the
    mean of the two directions, s the cosine and the softmax over the 2N − 1 other views:
    ℓ_i = ½(−log softmax(s(a_i, ·)/τ)[b_i] − log softmax(s(b_i, ·)/τ)[a_i])."""
    n = anchors.size(0)
    views = F.normalize(torch.cat([anchors, partners]).float(), dim=-1)
    similarity = views @ views.T / temperature
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=views.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(views.device)
    losses = F.cross_entropy(similarity, target, reduction="none")
    return (losses[:n] + losses[n:]) / 2


def clip_info_nce(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-pair symmetric image↔text InfoNCE (CLIP, Radford et al. 2021): row i of `image_embeddings` [N, d] and of
    `text_embeddings` [N, d] are the positive pair, the other rows the negatives. Returns `[N]`:
    ℓ_i = ½(−log softmax_j(s(x_i, t_j)/τ)[i] − log softmax_j(s(x_j, t_i)/τ)[i])."""
    images = F.normalize(image_embeddings.float(), dim=-1)
    texts = F.normalize(text_embeddings.float(), dim=-1)
    logits = images @ texts.T / temperature
    target = torch.arange(images.size(0), device=images.device)
    return (F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")) / 2


def alignment_calibration_loss(
    retain_losses: torch.Tensor, forget_losses: torch.Tensor, forget_view_cosine: torch.Tensor, alpha: float,
    beta_prime: float,
) -> dict[str, torch.Tensor]:
    """Alignment Calibration (Wang et al., arXiv 2406.03603) as named terms that sum to the loss:

        L = [Σ_{i∈B_r} ℓ_i + α Σ_{i∈B_f} ℓ_i] / (|B_r| + α|B_f|)  +  β' · mean_{i∈B_f} cos(z(a_i), z(c_i))

    `"retain"` = Σ_r ℓ_i / denominator, `"forget"` = α Σ_f ℓ_i / denominator (negative alignment calibration: ℓ_i of a
    forget anchor has a different forget image as its positive), `"calibration"` = β' · mean cosine of two views of the
    same forget image (positive alignment calibration, minimised so they separate).
    """  # fmt: skip
    denominator = retain_losses.numel() + alpha * forget_losses.numel()
    return {
        "retain": retain_losses.float().sum() / denominator,
        "forget": alpha * forget_losses.float().sum() / denominator,
        "calibration": beta_prime * forget_view_cosine.float().mean(),
    }


# ---- token-level forget losses (UNDIAL, WGA, SatImp, CE-U): each returns `[B]`, a mean over each answer's tokens ----


def _per_answer_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`[B, T]` per-position values → `[B]`: the mean over each row's scored positions (0 for a row with none). A mean
    per answer, then the caller's mean over answers, keeps gradient accumulation equal to the large batch."""
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def lowered_target_cross_entropy(
    target_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, lower: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position that predicts a label (aligned as `token_logps`): the cross-entropy −Σ_v q(v)·log p_θ(v) of the
    model's distribution against `q = softmax(target logits with the label's logit lowered by `lower`)`; `lower = inf`
    removes the label from `q`. `target_logits` are used as given (pass them detached or from a frozen model).
    Returns `(cross_entropy [B, T-1], mask)`, float32, 0 where the label is -100; a few examples at a time."""
    target_logits, aligned = align_logits_and_labels(target_logits, labels)
    logits, _ = align_logits_and_labels(logits, labels)
    mask = aligned != IGNORE_INDEX
    index = aligned.masked_fill(~mask, 0).unsqueeze(-1)
    step, losses = _rows_at_once(logits), []
    for target, rows, i in zip(target_logits.split(step), logits.split(step), index.split(step), strict=True):
        target = _wide(target)
        if math.isinf(lower):
            target = target.scatter(-1, i, float("-inf"))
        else:
            target = target.scatter_add(-1, i, torch.full(i.shape, -float(lower), dtype=target.dtype, device=i.device))
        losses.append(-(target.softmax(-1) * _wide(rows).log_softmax(-1)).sum(-1))
    return torch.cat(losses).masked_fill(~mask, 0), mask


def undial_loss(
    reference_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, beta: float
) -> torch.Tensor:
    """UNDIAL (Dong et al., arXiv 2402.10052): self-distillation toward the frozen model's adjusted logits. At each
    answer position, `q = softmax(z_θ0 − β·onehot(y_t))` (the reference's logits with the answer token's lowered by
    β) and the loss is the cross-entropy −Σ_v q(v)·log p_θ(v | y_<t, x). Returns `[B]`, the mean over each answer."""
    return _per_answer_mean(*lowered_target_cross_entropy(reference_logits, logits, labels, beta))


def skip_first_answer_tokens(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Causal-LM labels `[B, T]` with each row's first `count` answer labels (those not -100) set to -100; classifier
    labels `[B]` are returned as they are."""
    if count <= 0 or labels.dim() == 1:
        return labels
    answer = labels != IGNORE_INDEX
    return labels.masked_fill(answer & (answer.cumsum(-1) <= count), IGNORE_INDEX)


def ce_u_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_first: int = 0) -> torch.Tensor:
    """CE-U, cross-entropy unlearning (Yang, arXiv 2503.01224): at each answer position, the cross-entropy of the
    model's distribution against its own (detached) distribution with the answer token's logit set to −∞,
    `q(v) = p_θ(v) / (1 − p_θ(y_t))` for v ≠ y_t and `q(y_t) = 0`. Its gradient in the logits, `p_θ − q`, is bounded,
    unlike gradient ascent's. `ignore_first` answer tokens of each row are left out (the paper's footnote leaves out
    the first). Returns `[B]`, the mean over each answer's remaining tokens."""
    labels = skip_first_answer_tokens(labels, ignore_first)
    return _per_answer_mean(*lowered_target_cross_entropy(logits.detach(), logits, labels, math.inf))


def weighted_ascent_loss(token_logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Token-weighted gradient ascent: `[B]`, per answer the mean over its tokens of `w_t · log p_θ(y_t | y_<t, x)`
    (minimising it lowers each token's log-probability in proportion to `w_t`). `weights` are detached here: they
    scale each token's gradient and are not themselves trained. `token_logps`, `mask`: `token_logps`' outputs."""
    return _per_answer_mean(weights.detach() * token_logps, mask)


def wga_loss(token_logps: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """WGA, weighted gradient ascent (Wang et al., arXiv 2502.19301): `weighted_ascent_loss` with `w_t = p_θ(y_t)^β`,
    so tokens the model no longer predicts stop pulling (β = 0 is plain gradient ascent). Returns `[B]`."""
    return weighted_ascent_loss(token_logps, mask, (beta * token_logps.detach()).exp())


def satimp_loss(token_logps: torch.Tensor, mask: torch.Tensor, beta1: float, beta2: float) -> torch.Tensor:
    """SatImp (Yang et al., arXiv 2505.11953): `weighted_ascent_loss` with `w_t = p^β1 · (1 − p)^β2`, p = p_θ(y_t):
    saturation (p^β1, small once a token is unlearned) times importance ((1 − p)^β2). Returns `[B]`."""
    p = token_logps.detach().exp()
    return weighted_ascent_loss(token_logps, mask, p.pow(beta1) * (1 - p).pow(beta2))


def dpo_loss(
    chosen_logps: torch.Tensor, chosen_reference_logps: torch.Tensor, rejected_logps: torch.Tensor,
    rejected_reference_logps: torch.Tensor, beta: float,
) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290) as the unlearning papers write it (NPO's IdkDPO, Zhang et al. 2024,
    arXiv 2404.05868; AltPO, Mekala et al. 2024, arXiv 2409.13474), per pair (`[N]`; the loss is their mean):

        −(2/β) · log σ(β · [(log p_θ(y_w|x) − log p_θ0(y_w|x)) − (log p_θ(y_l|x) − log p_θ0(y_l|x))])

    `y_w` the preferred answer (a refusal, an alternate), `y_l` the forget answer; log-probs are sums over answer
    tokens. The 2/β factor is NPO's scaling (the alignment paper has −log σ): as β → 0 the gradient tends to that of
    −margin, descent on `y_w` plus ascent on `y_l`, instead of vanishing."""
    margin = (chosen_logps - chosen_reference_logps) - (rejected_logps - rejected_reference_logps)
    return -(2.0 / beta) * F.logsigmoid(beta * margin)


def activation_distance(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMU's distance of a layer's activations from a target (Li et al. 2024, arXiv 2403.03218), per row: the mean over
    the row's counted tokens (`mask` [B, T], True where counted) of ||h_t − target_t||² / d. `hidden` is `[B, T, d]`;
    `target` broadcasts to it (θ_0's activations `[B, T, d]`, or the steering vector c·u `[d]`). Returns `[B]` in
    float32 (float64 kept); a row with no counted token gives 0."""
    squared = (_wide(hidden) - _wide(target)).pow(2).mean(-1)
    return _per_answer_mean(squared, mask.to(squared.dtype))
