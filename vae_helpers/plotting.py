"""Figures that teach: image galleries, reconstructions, training curves, latent scatter and manifold.

Every function takes an optional ``ax``, titles its figure and returns the axes it drew on.
Introduced in notebook 00 (gallery) and used throughout.
"""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import torch

from .train import History

ArrayLike = torch.Tensor | np.ndarray


def to_images(images: ArrayLike, side: int = 28) -> np.ndarray:
    """Images ``(N, 784)``, ``(N, 1, 28, 28)`` or ``(N, 28, 28)`` as a float array ``(N, 28, 28)``."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a torch.Tensor or numpy array, got {type(images).__name__}")
    if images.ndim == 1 or images.size % (side * side) != 0 or images.size == 0:
        raise ValueError(f"expected a batch of {side}x{side} images, got shape {images.shape}")
    return images.reshape(-1, side, side).astype(np.float32)


def tile(images: ArrayLike, ncols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tile ``(N, 28, 28)``-like images into one ``(rows*(28+pad)-pad, ncols*(28+pad)-pad)`` array."""
    imgs = to_images(images)
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    n, h, w = imgs.shape
    nrows = -(-n // ncols)
    canvas = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), fill, dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncols)
        canvas[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return canvas


def _axes(ax: plt.Axes | None, figsize: tuple[float, float]) -> plt.Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _image_axes(ax: plt.Axes, title: str) -> None:
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def gallery(images: ArrayLike, ncols: int = 10, title: str = "MNIST digits", ax: plt.Axes | None = None,
            labels: Sequence[int] | None = None) -> plt.Axes:
    """Show a grid of images in grey (white background, ink dark); optional labels on the grid."""
    imgs = to_images(images)
    nrows = -(-len(imgs) // ncols)
    ax = _axes(ax, (ncols * 0.8, nrows * 0.8 + 0.6))
    ax.imshow(1.0 - tile(imgs, ncols, fill=0.0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if labels is not None:
        for i, label in enumerate(labels):
            r, c = divmod(i, ncols)
            ax.text(c * 29 + 1, r * 29 + 5, str(int(label)), color="tab:red", fontsize=7)
    _image_axes(ax, title)
    return ax


def reconstructions(originals: ArrayLike, reconstructed: ArrayLike, title: str = "Originals (top) and reconstructions (bottom)",
                    ax: plt.Axes | None = None, row_labels: Sequence[str] = ("original", "reconstruction")) -> plt.Axes:
    """Originals in one row and their reconstructions in the row beneath (more rows if more arrays are given)."""
    top, bottom = to_images(originals), to_images(reconstructed)
    if top.shape != bottom.shape:
        raise ValueError(f"originals {top.shape} and reconstructions {bottom.shape} must have the same shape")
    return comparison_rows([top, bottom], row_labels, title=title, ax=ax)


def comparison_rows(rows: Sequence[ArrayLike], row_labels: Sequence[str], title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """Several equally long rows of images, one labelled row each (originals, reconstructions, samples...)."""
    arrays = [to_images(r) for r in rows]
    if len(arrays) != len(row_labels):
        raise ValueError(f"got {len(arrays)} rows but {len(row_labels)} row labels")
    ncols = len(arrays[0])
    if any(len(a) != ncols for a in arrays):
        raise ValueError("every row must hold the same number of images")
    ax = _axes(ax, (ncols * 0.9 + 1.2, len(arrays) * 0.9 + 0.6))
    ax.imshow(1.0 - tile(np.concatenate(arrays), ncols, fill=0.0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _image_axes(ax, title)
    ax.set_yticks([r * 29 + 14 for r in range(len(arrays))])
    ax.set_yticklabels(list(row_labels))
    ax.tick_params(axis="y", length=0)
    return ax


def training_curves(history: History, terms: Sequence[str] = ("loss",), title: str = "Training curves",
                    ax: plt.Axes | None = None, ylabel: str = "loss per example", log_scale: bool = False) -> plt.Axes:
    """Per-epoch train (solid) and validation (dashed) means of the named terms of a ``History``, at whole-epoch
    ticks; ``log_scale`` puts the values on a logarithmic axis (all must then be positive)."""
    if not isinstance(history, History):
        raise TypeError(f"history must be a vae_helpers.train.History, got {type(history).__name__}")
    ax = _axes(ax, (6, 3.5))
    for i, term in enumerate(terms):
        if term not in history.train:
            raise KeyError(f"history has no term {term!r}; it has {sorted(history.train)}")
        colour = f"C{i}"
        if log_scale and min(history.train[term] + history.val.get(term, [])) <= 0:
            raise ValueError(f"log_scale needs positive values, but term {term!r} has values <= 0")
        epochs = np.arange(1, len(history.train[term]) + 1)
        ax.plot(epochs, history.train[term], "-o", color=colour, ms=3, label=f"{term} (train)")
        if term in history.val:
            ax.plot(epochs[: len(history.val[term])], history.val[term], "--s", color=colour, ms=3, label=f"{term} (validation)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def latent_scatter(z: ArrayLike, labels: ArrayLike | None = None, title: str = "Test digits in latent space",
                   ax: plt.Axes | None = None, dims: tuple[int, int] = (0, 1), s: float = 3.0) -> plt.Axes:
    """Scatter the codes ``z`` (N, latent_dim) on two dimensions, coloured by digit label with a legend."""
    z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    if z.ndim != 2 or z.shape[1] <= max(dims):
        raise ValueError(f"z must be (N, latent_dim) with latent_dim > {max(dims)}, got shape {z.shape}")
    ax = _axes(ax, (6, 5.5))
    if labels is None:
        ax.scatter(z[:, dims[0]], z[:, dims[1]], s=s, alpha=0.6)
    else:
        labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        cmap = plt.get_cmap("tab10")
        for digit in range(10):
            m = labels == digit
            ax.scatter(z[m, dims[0]], z[m, dims[1]], s=s, alpha=0.6, color=cmap(digit), label=str(digit))
        ax.legend(title="digit", markerscale=4, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel(f"$z_{{{dims[0] + 1}}}$")
    ax.set_ylabel(f"$z_{{{dims[1] + 1}}}$")
    ax.set_title(title)
    return ax


def gaussian_grid(n: int = 20, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """An ``(n*n, 2)`` grid of z values at standard-normal quantiles ``norm.ppf(linspace(low, high, n))``."""
    from scipy.stats import norm

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not 0 < low < high < 1:
        raise ValueError(f"need 0 < low < high < 1, got low={low}, high={high}")
    q = torch.tensor(norm.ppf(np.linspace(low, high, n)), dtype=torch.float32)
    z1, z2 = torch.meshgrid(q, q.flip(0), indexing="xy")  # rows go from high z2 (top) to low z2
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1)


def latent_manifold(decode: Callable[[torch.Tensor], torch.Tensor], n: int = 20, title: str = "Digits decoded on a grid of Gaussian quantiles",
                    ax: plt.Axes | None = None, low: float = 0.05, high: float = 0.95) -> plt.Axes:
    """Decode an n x n grid of 2-D codes at Gaussian quantiles and show the images as one picture.

    ``decode`` maps codes ``(M, 2)`` to pixel intensities in [0, 1] (e.g. ``sigmoid(model.decode(z))``).
    """
    grid = gaussian_grid(n, low, high)
    with torch.no_grad():
        images = decode(grid)
    ax = _axes(ax, (8, 8))
    ax.imshow(1.0 - tile(images, n, pad=0, fill=0.0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _image_axes(ax, title)
    ticks = np.arange(n) * 28 + 14
    values = grid[:n, 0].numpy()
    step = max(1, n // 5)
    ax.set_xticks(ticks[::step])
    ax.set_xticklabels([f"{v:.1f}" for v in values[::step]])
    ax.set_yticks(ticks[::step])
    ax.set_yticklabels([f"{v:.1f}" for v in values[::-1][::step]])
    ax.set_xlabel("$z_1$ (standard-normal quantiles)")
    ax.set_ylabel("$z_2$")
    return ax


def kl_per_dimension(kl: ArrayLike, threshold: float = 0.01, title: str = "Average KL per latent dimension",
                     ax: plt.Axes | None = None, log_scale: bool = False) -> plt.Axes:
    """Bars of the mean KL(q(z_d|x) || N(0, 1)) of each latent dimension ``(D,)``, sorted; dimensions below
    ``threshold`` nats (inactive: their posterior is the prior) in grey; ``log_scale`` keeps small bars and the
    threshold line visible. Introduced in notebook 02."""
    kl = kl.detach().cpu().numpy() if isinstance(kl, torch.Tensor) else np.asarray(kl, dtype=float)
    if kl.ndim != 1 or kl.size == 0:
        raise ValueError(f"kl must be a non-empty vector (latent_dim,), got shape {kl.shape}")
    if not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number of nats, got {threshold!r}")
    order = np.argsort(-kl)
    ax = _axes(ax, (max(4.0, 0.35 * kl.size + 1.5), 3.2))
    colours = ["C0" if v > threshold else "lightgrey" for v in kl[order]]
    ax.bar(np.arange(kl.size), kl[order], color=colours)
    ax.axhline(threshold, color="black", ls=":", lw=1.5, label=f"{threshold:g} nats (active above)")
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(threshold / 3, max(kl.min(), 1e-6) / 3) if threshold > 0 else None)
    ax.set_xticks(np.arange(kl.size))
    ax.set_xticklabels([str(d + 1) for d in order], fontsize=7)
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("mean KL per example (nats)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return ax
