"""Blend: condense the retain set before unlearning (Khan 2025, "Leveraging Distribution Matching to Make Approximate
Machine Unlearning Faster", arXiv 2507.09786; code: algebraicdianuj/DC_Unlearning).

1. Features: the flattened output of a randomly initialised ConvNet (never trained).
2. Per class, k-means (scikit-learn) with `images_per_class` clusters over that class's retain and forget images.
3. A cluster holding a forget example keeps its retain members as they are (its forget members are dropped). Every
   other cluster becomes one image `x̃ = Σ_i w_i · x_i`, `w = softmax(a)` (convex weights, equal at the start).
4. `a` is learned by matching mean embeddings under a fresh random ConvNet φ: minimise `‖φ(x̃) − mean_i φ(x_i)‖²`
   with SGD (momentum 0.5) for 12–20 steps. The label of `x̃` is the cluster's class.

The reduced retain set (kept members and blended images) replaces `retain_dataset` in any unlearning trainer. Only
the weights are learned, never the pixels, which is why Blend runs in seconds where distribution matching
(`dm_condense`, Zhao & Bilen 2023, the baseline it is compared with) optimises every pixel for thousands of steps.

Rows are image rows: `pixel_values` (`[C, H, W]`) and an int class in `labels` (or `label`). `save_image_rows` and
`load_image_rows` keep them in a safetensors file (`pixel_values` `[N, C, H, W]` float32, `labels` `[N]` int64), the
format of `hf-unlearn condense`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import column_names, label_column
from ..evaluation.checks import check_int, check_number, check_positive_int, check_rows, is_int, kind, show

logger = logging.getLogger(__name__)


@dataclass
class BlendCluster:
    """One k-means cluster of a class: which retain rows it holds, how many forget rows fell into it, whether its
    retain members were kept as they are (it holds a forget example) or blended into one image with `weights`."""

    label: int
    retain_indices: list[int]
    num_forget: int
    kept: bool
    weights: torch.Tensor | None = None


def random_convnet(num_channels: int, image_size: tuple[int, int], width: int = 64, depth: int | None = None,
                   seed: int = 0) -> nn.Sequential:  # fmt: skip
    """The dataset-condensation ConvNet (Zhao & Bilen's `ConvNet`: [conv 3×3 → instance norm → ReLU → avg-pool 2]
    × depth, flattened), randomly initialised from `seed` and frozen. `depth` defaults to as many poolings as leave at
    least a 2×2 map, at most 3 (8×8 digits: 2, 32×32 CIFAR: 3). Instance norm keeps every image independent of the
    others in its batch."""
    height, width_px = image_size
    if depth is None:
        depth = max(1, min(3, int(math.log2(max(1, min(height, width_px)))) - 1))
    layers: list[nn.Module] = []
    channels = num_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(), nn.AvgPool2d(2)]
            channels = width
        net = nn.Sequential(*layers, nn.Flatten())
    return net.requires_grad_(False).eval()


def _image_tensors(dataset, name: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """`(images [N, C, H, W] float32, labels [N] int64, label key)` of image rows; a clear error for other rows."""
    if dataset is None or (hasattr(dataset, "__len__") and not isinstance(dataset, (str, bytes, dict))
                           and len(dataset) == 0):  # fmt: skip
        raise ValueError(f"{name} is empty: Blend needs image rows (pixel_values + labels).")
    check_rows(dataset, name)
    columns = column_names(dataset)
    label_key = label_column(columns)
    if "pixel_values" not in columns or label_key is None:
        held = "text rows" if {"text", "sentence", "question", "input_ids"} & set(columns) else "rows"
        raise ValueError(
            f"Blend condenses image rows, but {name} holds {held} with columns {columns}. It needs 'pixel_values' "
            "(processed images, [C, H, W]) and an int 'labels' (or 'label') column. For text, unlearn with the full "
            "retain set (any trainer takes it), or process the images first."
        )
    if hasattr(dataset, "with_format"):  # a datasets.Dataset: one columnar read instead of N row reads
        table = dataset.with_format("torch", columns=["pixel_values", label_key])[:]
        images, labels = table["pixel_values"], table[label_key]
        images = torch.stack(list(images)) if isinstance(images, list) else images  # ragged columns come as a list
    else:
        check_rows(dataset, name, ("pixel_values", label_key))
        images = [torch.as_tensor(dataset[i]["pixel_values"]) for i in range(len(dataset))]
        for index, image in enumerate(images):
            if image.shape != images[0].shape:
                raise ValueError(f"{name}[{index}]['pixel_values'] has shape {list(image.shape)} but {name}[0]'s is "
                                 f"{list(images[0].shape)}: process every image to one size and channel count (the "
                                 "model's image processor).")  # fmt: skip
        images = torch.stack(images)
        labels = [dataset[i][label_key] for i in range(len(dataset))]
        for index, label in enumerate(labels):
            if not is_int(label):
                raise TypeError(f"{name}[{index}][{label_key!r}]={show(label)} is {kind(label)}: Blend "
                                "groups images by class, so each row's label is one int class index.")  # fmt: skip
        labels = torch.as_tensor([int(label) for label in labels])
    images, labels = torch.as_tensor(images, dtype=torch.float32), torch.as_tensor(labels)
    if images.dim() != 4:
        raise ValueError(f"{name}'s pixel_values have shape {tuple(images.shape[1:])} per row: Blend needs "
                         "[channels, height, width] images (add a channel axis to grey images).")  # fmt: skip
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"{name}'s {label_key!r} are not one int class per image: Blend groups images by class.")
    if not images.isfinite().all():
        bad = (~images.isfinite()).flatten(1).any(-1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name}'s pixel_values hold NaN or inf (rows {bad}): pass finite images.")
    return images, labels.long(), label_key


@torch.no_grad()
def _embed(net: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([net(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _cluster(features_retain, labels_retain, features_forget, labels_forget, images_per_class, seed):
    """Per class, k-means over the class's retain and forget features: the clusters, each as a `BlendCluster`."""
    from sklearn.cluster import KMeans

    clusters = []
    for label in labels_retain.unique().tolist():
        retain_idx = (labels_retain == label).nonzero().flatten()
        forget_idx = (labels_forget == label).nonzero().flatten()
        points = torch.cat([features_retain[retain_idx], features_forget[forget_idx]]).double().numpy()
        k = min(images_per_class, len(points))
        if k == len(points):
            assignment = torch.arange(len(points))  # every image is its own cluster
        else:
            kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed)
            assignment = torch.as_tensor(kmeans.fit_predict(points))
        retain_of, forget_of = assignment[: len(retain_idx)], assignment[len(retain_idx) :]
        for cluster in range(k):
            members = retain_idx[retain_of == cluster].tolist()
            num_forget = int((forget_of == cluster).sum())
            if members:  # a cluster of forget images alone leaves nothing
                clusters.append(BlendCluster(int(label), members, num_forget, kept=num_forget > 0))
    return clusters


def _blend_weights(members: torch.Tensor, mask: torch.Tensor, phi: nn.Module, steps: int, lr: float) -> torch.Tensor:
    """Convex weights `[b, m]` (zero on padding) of `b` padded clusters `members [b, m, C, H, W]`, learned so that
    `φ(Σ w·x)` matches the members' mean embedding."""
    b, m = mask.shape
    target = torch.zeros(b, m, *phi(members[:1, 0]).shape[1:])
    target[mask] = _embed(phi, members[mask])
    target = (target * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    logits = torch.zeros(b, m, requires_grad=True)  # softmax(0) = 1/n: the paper's initial weights
    optimizer = torch.optim.SGD([logits], lr=lr, momentum=0.5)
    for _ in range(steps):
        weights = logits.masked_fill(~mask, -torch.inf).softmax(-1)
        blended = torch.einsum("bm,bm...->b...", weights, members)
        # one term per cluster, summed, so a cluster's weights do not depend on the others in its batch
        loss = (phi(blended) - target).pow(2).mean(-1).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return logits.detach().masked_fill(~mask, -torch.inf).softmax(-1)


def blend_condense(retain_dataset, forget_dataset, images_per_class: int = 10, steps: int = 16, batch_size: int = 64,
                   lr: float = 100.0, width: int = 64, seed: int = 0, progress: bool = True,
                   return_clusters: bool = False):  # fmt: skip
    """Blend (Khan 2025, arXiv 2507.09786): a reduced retain set — the retain members of every cluster that holds a
    forget example, unchanged, plus one blended image per other cluster — to pass as `retain_dataset` to any trainer.

    Args:
        retain_dataset, forget_dataset: image rows (`pixel_values` `[C, H, W]` and int `labels`/`label`), a list of
            dicts or a `datasets.Dataset`. Forget rows only decide which clusters are kept; none of them is returned.
        images_per_class: k of the per-class k-means (the paper's scripts: 800–1000 on CIFAR-10).
        steps: SGD steps on the blending weights (paper: 12–20); 0 keeps the equal starting weights (cluster means).
        batch_size: clusters blended together (padded to the largest in the batch).
        lr: SGD learning rate of the weights' logits (momentum 0.5); the loss is the per-cluster mean squared
            embedding gap, so it does not depend on the embedding size.
        width: channels of the random ConvNets.
        seed: seeds the feature ConvNet, k-means and the fresh matching ConvNet φ.
        progress: show a progress bar over the cluster batches.
        return_clusters: also return the `BlendCluster`s (which retain rows each holds, kept or blended, the weights):
            the kept ones, then the blended ones in the order of their images.

    Returns:
        Rows `{"pixel_values": [C, H, W] tensor, <label key>: int}` — a `datasets.Dataset` when `retain_dataset` is
        one — kept rows first, in retain order, then the blended images; with `return_clusters`, `(rows, clusters)`.
    """
    check_positive_int("images_per_class", images_per_class, unit="clusters per class",
                       note="k of the per-class k-means (the paper: 800-1000 on CIFAR-10)")  # fmt: skip
    check_int("steps", steps, 0, unit="SGD steps", note="the paper learns the weights in 12-20; 0 keeps them equal")
    check_positive_int("batch_size", batch_size, unit="clusters blended together")
    check_number("lr", lr, 0, low_open=True)
    check_positive_int("width", width, unit="channels")
    check_int("seed", seed, 0)
    retain_images, retain_labels, label_key = _image_tensors(retain_dataset, "retain_dataset")
    forget_images, forget_labels, _ = _image_tensors(forget_dataset, "forget_dataset")
    if forget_images.shape[1:] != retain_images.shape[1:]:
        raise ValueError(f"forget images are {tuple(forget_images.shape[1:])} but retain images are "
                         f"{tuple(retain_images.shape[1:])}: process both with the same image processor.")  # fmt: skip
    shape = retain_images.shape[1:]
    features_net = random_convnet(shape[0], tuple(shape[1:]), width, seed=seed)
    clusters = _cluster(_embed(features_net, retain_images), retain_labels, _embed(features_net, forget_images),
                        forget_labels, images_per_class, seed)  # fmt: skip

    phi = random_convnet(shape[0], tuple(shape[1:]), width, seed=seed + 1)  # fresh, not the feature network
    to_blend = sorted((c for c in clusters if not c.kept), key=lambda c: len(c.retain_indices))
    batches = [to_blend[i : i + batch_size] for i in range(0, len(to_blend), batch_size)]
    blended_images = []
    for batch in tqdm(batches, desc="Blend", unit="batch", disable=not progress):
        size = max(len(c.retain_indices) for c in batch)
        index = torch.zeros(len(batch), size, dtype=torch.long)
        mask = torch.zeros(len(batch), size, dtype=torch.bool)
        for row, cluster in enumerate(batch):
            index[row, : len(cluster.retain_indices)] = torch.as_tensor(cluster.retain_indices)
            mask[row, : len(cluster.retain_indices)] = True
        members = retain_images[index] * mask[..., None, None, None]
        with torch.enable_grad():
            weights = _blend_weights(members, mask, phi, steps, lr)
        blended_images.append(torch.einsum("bm,bm...->b...", weights, members))
        for row, cluster in enumerate(batch):
            cluster.weights = weights[row, : len(cluster.retain_indices)].clone()

    kept = sorted(i for c in clusters if c.kept for i in c.retain_indices)
    is_dataset = hasattr(retain_dataset, "with_format")
    rows = [{"pixel_values": retain_images[i] if is_dataset else retain_dataset[i]["pixel_values"],
             label_key: int(retain_labels[i])} for i in kept]  # fmt: skip
    images = torch.cat(blended_images) if blended_images else torch.empty(0, *shape)
    rows += [{"pixel_values": image, label_key: c.label} for image, c in zip(images, to_blend, strict=True)]
    logger.info(f"Blend: {len(retain_images)} retain rows -> {len(rows)} ({len(kept)} kept from "
                f"{sum(c.kept for c in clusters)} clusters holding forget rows, {len(to_blend)} blended)")  # fmt: skip
    if is_dataset:
        rows = _as_dataset(rows, retain_dataset)
    clusters = [c for c in clusters if c.kept] + to_blend  # the i-th blended cluster made the i-th blended image
    return (rows, clusters) if return_clusters else rows


def _as_dataset(rows: list[dict], like):
    import datasets

    columns = {key: [row[key] for row in rows] for key in rows[0]}
    columns["pixel_values"] = [torch.as_tensor(value).numpy() for value in columns["pixel_values"]]
    dataset = datasets.Dataset.from_dict(columns)
    return dataset.with_format(like.format["type"]) if like.format["type"] else dataset


def dm_condense(retain_dataset, images_per_class: int = 10, iterations: int = 20000, lr: float = 1.0,
                batch_real: int = 256, width: int = 64, seed: int = 0, progress: bool = True) -> list[dict]:
    """Distribution matching (Zhao & Bilen 2023, "Dataset Condensation with Distribution Matching", WACV): the
    pixel-optimisation condensation Blend is compared with. `images_per_class` synthetic images per class, started
    from random real ones, are optimised directly (SGD, momentum 0.5, `lr` 1.0 as in DM) so that their mean embedding
    under a freshly initialised random ConvNet matches that of `batch_real` real images of the class, a new network
    every iteration (DM's default: 20,000 iterations). DM's differentiable augmentation is left out.

    Returns rows `{"pixel_values", <label key>}`: `images_per_class` per class (fewer where the class has fewer)."""
    check_positive_int("images_per_class", images_per_class, unit="synthetic images per class")
    check_positive_int("iterations", iterations, unit="SGD steps")
    check_number("lr", lr, 0, low_open=True)
    check_positive_int("batch_real", batch_real, unit="real images per class and step")
    check_positive_int("width", width, unit="channels")
    check_int("seed", seed, 0)
    images, labels, label_key = _image_tensors(retain_dataset, "retain_dataset")
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique().tolist()
    by_class = [(labels == c).nonzero().flatten() for c in classes]
    start = [idx[torch.randperm(len(idx), generator=generator)[:images_per_class]] for idx in by_class]
    synthetic = images[torch.cat(start)].clone().requires_grad_(True)
    synthetic_class = torch.cat([torch.full((len(s),), k) for k, s in enumerate(start)])
    net = random_convnet(images.shape[1], tuple(images.shape[2:]), width, seed=seed)
    optimizer = torch.optim.SGD([synthetic], lr=lr, momentum=0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in tqdm(range(iterations), desc="DM", unit="it", disable=not progress):
            for module in net.modules():
                if isinstance(module, nn.Conv2d):
                    module.reset_parameters()  # a fresh random network every iteration, as DM samples one
            draws = [idx[torch.randperm(len(idx), generator=generator)[:batch_real]] for idx in by_class]
            real_class = torch.cat([torch.full((len(d),), k) for k, d in enumerate(draws)])
            with torch.no_grad():
                real = _class_means(net(images[torch.cat(draws)]), real_class, len(classes))
            loss = (real - _class_means(net(synthetic), synthetic_class, len(classes))).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    result = synthetic.detach()
    return [{"pixel_values": image, label_key: int(classes[k])} for image, k in zip(result, synthetic_class.tolist(),
                                                                                    strict=True)]  # fmt: skip


def _class_means(features: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    sums = torch.zeros(num_classes, features.shape[1]).index_add(0, classes, features)
    return sums / torch.bincount(classes, minlength=num_classes).clamp(min=1)[:, None]


def save_image_rows(rows, path: str | Path) -> None:
    """Write image rows to a safetensors file: `pixel_values` `[N, C, H, W]` float32 and `labels` `[N]` int64."""
    from safetensors.torch import save_file

    images, labels, _ = _image_tensors(rows, "rows")
    folder = Path(path).parent
    if Path(path).is_dir() or not folder.is_dir():
        raise (IsADirectoryError if Path(path).is_dir() else FileNotFoundError)(
            f"path={str(path)!r} {'is a folder' if Path(path).is_dir() else 'is in a folder that does not exist'}: "
            "pass a file path (e.g. condensed.safetensors) in an existing folder."
        )
    save_file({"pixel_values": images.contiguous(), "labels": labels.contiguous()}, str(path),
              metadata={"format": "hf-unlearn image rows"})  # fmt: skip


def load_image_rows(path: str | Path) -> list[dict]:
    """Image rows `{"pixel_values": [C, H, W], "labels": int}` from a safetensors file (`save_image_rows`' format)."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a safetensors file of image rows (save_image_rows).")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors' own errors (a header too large, not JSON, ...) name no fix
        raise ValueError(f"{path} is not a safetensors file ({type(error).__name__}: {error}): pass a file written by "
                         "hf_unlearn.preparation.save_image_rows (or `hf-unlearn condense`).") from error
    if set(tensors) != {"pixel_values", "labels"}:
        raise ValueError(f"{path} holds tensors {sorted(tensors)}: an image-rows file holds 'pixel_values' "
                         "[N, C, H, W] and 'labels' [N] (write it with hf_unlearn.preparation.save_image_rows).")
    images, labels = tensors["pixel_values"], tensors["labels"]
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or labels.is_floating_point():
        raise ValueError(f"{path} holds pixel_values {list(images.shape)} and labels {list(labels.shape)} "
                         f"({labels.dtype}): an image-rows file holds [N, C, H, W] images and N int labels; write it "
                         "with hf_unlearn.preparation.save_image_rows.")  # fmt: skip
    return [{"pixel_values": image, "labels": int(label)}
            for image, label in zip(tensors["pixel_values"], tensors["labels"].tolist(), strict=True)]  # fmt: skip
