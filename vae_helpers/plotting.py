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
    """Show a grid of images in grey (white background, ink dark); optional labels on the grid.

    ``images``: ``(N, 784)``, ``(N, 28, 28)`` or ``(N, 1, 28, 28)`` with values in [0, 1], N >= 1.
    """
    expected = "grey 28x28 images of shape (N, 784), (N, 28, 28) or (N, 1, 28, 28) with values in [0, 1]"
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        raise TypeError(f"gallery expects {expected} as a tensor or array, got {type(images).__name__}")
    shape = tuple(images.shape)
    if shape[1:] not in ((784,), (28, 28), (1, 28, 28)) or shape[0] == 0:
        raise ValueError(f"gallery expects {expected}, got shape {shape}"
                         + (" (colour or other image sizes are not shown as MNIST tiles)" if len(shape) > 1 and shape[0] else ""))
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive int, got {ncols!r}")
    imgs = to_images(images)
    low, high = float(np.nanmin(imgs)), float(np.nanmax(imgs))
    if low < 0.0 or high > 1.0:
        hint = ": divide by 255" if high > 1.0 and low >= 0.0 else ""
        raise ValueError(f"gallery expects {expected}, got values in [{low:g}, {high:g}]{hint}")
    if labels is not None and len(labels) > len(imgs):
        raise ValueError(f"got {len(labels)} labels for {len(imgs)} images; expected at most one label per image")
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
    num_epochs = len(history.train[terms[0]]) if terms else 0
    if num_epochs <= 15:
        ax.set_xticks(np.arange(1, num_epochs + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)  # below, off the data
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


def _as_array(values: ArrayLike | Sequence[float], name: str) -> np.ndarray:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite numbers, got {array}")
    return array.astype(float)


def posterior_ellipses(mu: ArrayLike, logvar: ArrayLike, labels: ArrayLike | None = None, n_std: float = 1.0,
                       title: str = "Posteriors q(z|x) as ellipses mu ± sigma", ax: plt.Axes | None = None) -> plt.Axes:
    """Draw each diagonal Gaussian q(z|x) of a 2-D code as an ellipse of half-axes ``n_std * sigma`` around ``mu``.

    mu, logvar: ``(N, 2)``; labels: ``(N,)`` digit labels for the colours. Introduced in notebook 02.
    """
    from matplotlib.collections import EllipseCollection

    mu, logvar = _as_array(mu, "mu"), _as_array(logvar, "logvar")
    if mu.ndim != 2 or mu.shape[1] != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be (N, 2), got {mu.shape} and {logvar.shape}")
    if not n_std > 0:
        raise ValueError(f"n_std must be a positive number of standard deviations, got {n_std!r}")
    ax = _axes(ax, (6, 5.5))
    sigma = np.exp(0.5 * logvar)
    cmap = plt.get_cmap("tab10")
    colours = [cmap(int(d) % 10) for d in _as_array(labels, "labels")] if labels is not None else "C0"
    ellipses = EllipseCollection(2 * n_std * sigma[:, 0], 2 * n_std * sigma[:, 1], np.zeros(len(mu)), units="xy",
                                 offsets=mu, offset_transform=ax.transData, facecolors=colours, edgecolors=colours,
                                 alpha=0.25, linewidths=0.5)
    ax.add_collection(ellipses)
    ax.scatter(mu[:, 0], mu[:, 1], s=2, c=colours, zorder=3)
    reach = np.abs(mu).max(0) + n_std * sigma.max(0) + 0.2
    ax.set_xlim(-reach[0], reach[0])
    ax.set_ylim(-reach[1], reach[1])
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    return ax


def aggregate_posterior(z: ArrayLike, limit: float = 4.0, bins: int = 80,
                        title: str = "Aggregate posterior q(z) against the prior N(0, I)", ax: plt.Axes | None = None) -> plt.Axes:
    """2-D histogram of codes ``z`` (N, 2), one draw from q(z|x) per digit, with the prior's 1, 2, 3 sigma circles."""
    z = _as_array(z, "z")
    if z.ndim != 2 or z.shape[1] != 2 or len(z) == 0:
        raise ValueError(f"z must be a non-empty (N, 2) array of codes, got shape {z.shape}")
    if not limit > 0:
        raise ValueError(f"limit must be positive, got {limit!r}")
    ax = _axes(ax, (5.5, 5))
    edges = np.linspace(-limit, limit, bins + 1)
    density, _, _ = np.histogram2d(z[:, 0], z[:, 1], bins=[edges, edges], density=True)
    image = ax.imshow(density.T, origin="lower", extent=(-limit, limit, -limit, limit), cmap="Blues")
    ax.figure.colorbar(image, ax=ax, label="density of the codes", fraction=0.046)
    for radius, mass in ((1, 39), (2, 86), (3, 99)):
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, ls="--", color="C3", lw=1))
        ax.text(radius * 0.71, radius * 0.71, f"{mass}%", color="C3", fontsize=8)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    ax.set_title(title)
    return ax


def bound_gap_bars(neg_log_px: ArrayLike | Sequence[float], gaps: ArrayLike | Sequence[float], labels: Sequence[str],
                   title: str = "-ELBO = -log p(x) + gap", ax: plt.Axes | None = None,
                   gap_label: str = "gap: KL(q(z|x) || p(z|x))") -> plt.Axes:
    """Stacked bars, one per model or q: ``-log p(x)`` below, the ELBO's ``gap`` on top; the total is ``-ELBO``."""
    neg_log_px, gaps = _as_array(neg_log_px, "neg_log_px"), _as_array(gaps, "gaps")
    neg_log_px = np.broadcast_to(neg_log_px, gaps.shape) if neg_log_px.ndim == 0 else neg_log_px
    if gaps.ndim != 1 or neg_log_px.shape != gaps.shape or len(labels) != len(gaps):
        raise ValueError(f"need one -log p(x), one gap and one label per bar, got {neg_log_px.shape}, {gaps.shape}, {len(labels)}")
    ax = _axes(ax, (1.6 * len(gaps) + 2, 3.5))
    position = np.arange(len(gaps))
    ax.bar(position, neg_log_px, color="C0", label="-log p(x)")
    ax.bar(position, gaps, bottom=neg_log_px, color="C3", label=gap_label)
    for i, (base, gap) in enumerate(zip(neg_log_px, gaps)):
        ax.text(i, base + max(gap, 0), f"{base + gap:.2f}", ha="center", va="bottom", fontsize=8)
        ax.text(i, base / 2, f"{base:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xticks(position)
    ax.set_xticklabels(labels)
    ax.set_ylabel("nats")
    ax.set_ylim(top=float(np.max(neg_log_px + np.maximum(gaps, 0))) * 1.25)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def planar_map_guides(u: ArrayLike, w: ArrayLike, b: float | ArrayLike, ax: plt.Axes) -> plt.Axes:
    """Draw the hyperplane ``w^T z + b = 0`` of a 2-D planar map and its direction ``u`` as an arrow on ``ax``."""
    u, w, b = _as_array(u, "u").reshape(-1), _as_array(w, "w").reshape(-1), float(_as_array(b, "b").reshape(-1)[0])
    if u.shape != (2,) or w.shape != (2,):
        raise ValueError(f"u and w must be 2-D vectors, got shapes {u.shape} and {w.shape}")
    if not np.any(w):
        raise ValueError("w must not be zero: it is the normal of the hyperplane")
    foot = -b * w / (w @ w)                      # the point of the plane nearest the origin
    along = np.array([-w[1], w[0]]) / np.linalg.norm(w)
    ends = np.stack([foot - 20 * along, foot + 20 * along])
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    ax.plot(ends[:, 0], ends[:, 1], "k--", lw=1.2, label="$w^T z + b = 0$")
    ax.annotate("", xy=foot + u, xytext=foot, arrowprops=dict(arrowstyle="-|>", color="k", lw=2))
    ax.text(*(foot + 1.08 * u), "$u$", fontsize=12, fontweight="bold")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    return ax


_NODE_STYLE = {
    "data": dict(boxstyle="round,pad=0.4", fc="white", ec="black"),
    "layer": dict(boxstyle="round,pad=0.4", fc="#cfe2f3", ec="#3d85c6"),
    "code": dict(boxstyle="round,pad=0.4", fc="#fff2cc", ec="#bf9000"),
    "random": dict(boxstyle="circle,pad=0.3", fc="#f4cccc", ec="#cc0000"),
    "loss": dict(boxstyle="round,pad=0.4", fc="#d9ead3", ec="#38761d"),
}


def _node(ax: plt.Axes, xy: tuple[float, float], text: str, kind: str) -> plt.Text:
    return ax.text(*xy, text, ha="center", va="center", fontsize=9, bbox=_NODE_STYLE[kind], zorder=2)


def _arrow(ax: plt.Axes, start: plt.Text, end: plt.Text, gradient: bool = False, offset: float = 0.0) -> None:
    """An arrow from node ``start`` to node ``end``, cut at the edges of their boxes (dashed red: a gradient)."""
    style = dict(arrowstyle="-|>", color="#cc0000", lw=1.5, ls="--") if gradient else dict(arrowstyle="-|>", color="black", lw=1.2)
    (x0, y0), (x1, y1) = start.get_position(), end.get_position()
    ax.annotate("", xy=(x1, y1 + offset), xytext=(x0, y0 + offset), zorder=3,
                arrowprops=dict(style, patchA=start.get_bbox_patch(), patchB=end.get_bbox_patch(), shrinkA=1, shrinkB=1))


def network_diagram(blocks: Sequence[tuple[str, str]], title: str, ax: plt.Axes | None = None) -> plt.Axes:
    """A network drawn left to right as a chain of blocks ``(label, kind)``; kind is one of
    "data", "layer", "code", "random" or "loss" (colours in the legend of ``reparameterization_graph``)."""
    if not blocks:
        raise ValueError("blocks must list at least one (label, kind) pair")
    for label, kind in blocks:
        if kind not in _NODE_STYLE:
            raise ValueError(f"block kind must be one of {sorted(_NODE_STYLE)}, got {kind!r} for {label!r}")
    ax = _axes(ax, (1.7 * len(blocks) + 0.5, 1.8))
    nodes = [_node(ax, (i, 0), label, kind) for i, (label, kind) in enumerate(blocks)]
    for start, end in zip(nodes, nodes[1:]):
        _arrow(ax, start, end)
    ax.set_xlim(-0.6, len(blocks) - 0.4)
    ax.set_ylim(-0.6, 0.6)
    ax.axis("off")
    ax.set_title(title)
    return ax


def reparameterization_graph(reparameterized: bool = True, ax: plt.Axes | None = None) -> plt.Axes:
    """The VAE's computation graph with the sample drawn inside it (no gradient to the encoder) or, with
    ``reparameterized``, as z = mu + sigma * eps with eps from outside (gradients, dashed red, reach the encoder)."""
    ax = _axes(ax, (7, 3.2))
    at = {"x": (0, 0), "enc": (1, 0), "mu": (2, 0.5), "lv": (2, -0.5), "z": (3.2, 0), "dec": (4.3, 0), "loss": (5.4, 0)}
    node = {"x": _node(ax, at["x"], "x", "data"), "enc": _node(ax, at["enc"], "encoder\n$\\phi$", "layer"),
            "mu": _node(ax, at["mu"], "$\\mu$", "code"), "lv": _node(ax, at["lv"], "$\\log\\sigma^2$", "code")}
    if reparameterized:
        node["eps"] = _node(ax, (3.2, -1.1), "$\\varepsilon$\n~N(0, I)", "random")
        node["z"] = _node(ax, at["z"], "$z = \\mu + \\sigma \\odot \\varepsilon$", "code")
        _arrow(ax, node["eps"], node["z"])
    else:
        node["z"] = _node(ax, at["z"], "$z$ ~\nN($\\mu$, $\\sigma^2$)", "random")
    node["dec"] = _node(ax, at["dec"], "decoder\n$\\theta$", "layer")
    node["loss"] = _node(ax, at["loss"], "$-$ELBO", "loss")
    for a, b in [("x", "enc"), ("enc", "mu"), ("enc", "lv"), ("mu", "z"), ("lv", "z"), ("z", "dec"), ("dec", "loss")]:
        _arrow(ax, node[a], node[b])
    ax.annotate("", xy=(at["loss"][0], 0.25), xytext=(at["x"][0], 0.25),
                arrowprops=dict(arrowstyle="-|>", color="grey", lw=0.8, connectionstyle="arc3,rad=-0.25"))
    back = [("loss", "dec"), ("dec", "z")] + ([("z", "mu"), ("z", "lv"), ("mu", "enc"), ("lv", "enc")] if reparameterized else [])
    for a, b in back:
        _arrow(ax, node[a], node[b], gradient=True, offset=0.12)
    ax.plot([], [], "--", color="#cc0000", label="gradient")
    if not reparameterized:
        ax.text(2.6, -1.0, "no gradient through a random draw:\nthe encoder gets no signal from the decoder",
                ha="center", fontsize=8, color="#cc0000")
    ax.set_xlim(-0.5, 5.9)
    ax.set_ylim(-1.6, 1.3)
    ax.axis("off")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title("Reparameterised: $z = \\mu + \\sigma \\odot \\varepsilon$" if reparameterized else "Sampling inside the graph")
    return ax


def step_curves(curves: dict[str, Sequence[float]], title: str, ylabel: str = "training loss per image",
                ax: plt.Axes | None = None, smooth: int = 10, log_scale: bool = False) -> plt.Axes:
    """Loss per optimisation step of several short runs, one line each (running mean over ``smooth`` steps).

    ``curves`` maps a label to the loss of every step; a run that diverged ends in a non-finite value, which is
    drawn as an "x" at the top of the axes where the line stops, with "(diverged)" added to its label.
    """
    if not isinstance(curves, dict) or not curves:
        raise TypeError("curves must be a non-empty dict mapping a label to a sequence of per-step losses")
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f"smooth must be a positive int, got {smooth!r}")
    ax = _axes(ax, (6, 3.5))
    diverged = []
    for i, (label, values) in enumerate(curves.items()):
        v = (values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, dtype=float)).astype(float).ravel()
        if v.size == 0:
            raise ValueError(f"curves[{label!r}] is empty")
        finite = np.isfinite(v)
        stop = int(np.argmin(finite)) if not finite.all() else v.size
        kept = v[:stop]
        if kept.size >= smooth:
            running = np.convolve(kept, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.arange(smooth, kept.size + 1), running, color=f"C{i}",
                    label=label + (" (diverged)" if stop < v.size else ""))
        elif kept.size:  # too short to smooth: every step as a point
            ax.plot(np.arange(1, kept.size + 1), kept, "-o", ms=3, color=f"C{i}",
                    label=label + (" (diverged)" if stop < v.size else ""))
        if stop < v.size:
            diverged.append((stop + 1, f"C{i}", label if not kept.size else None))
    if log_scale:
        ax.set_yscale("log")
    for step, colour, label in diverged:
        ax.plot([step], [1.0], "x", color=colour, ms=9, mew=2, transform=ax.get_xaxis_transform(), clip_on=False,
                label=None if label is None else label + " (diverged)")
    ax.set_xlabel("optimisation step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def sliding_windows(size: int, kernel_size: int, stride: int = 1, padding: int = 0, ax: plt.Axes | None = None,
                    title: str | None = None) -> plt.Axes:
    """One row of ``size`` pixels with ``padding`` zeros on each side and, below it, every position at which a
    ``kernel_size`` window fits when it moves by ``stride``, numbered as the outputs they make. Notebook 03."""
    for name, value, low in (("size", size, 1), ("kernel_size", kernel_size, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    width = size + 2 * padding
    if kernel_size > width:
        raise ValueError(f"a kernel of {kernel_size} does not fit into {size} pixels padded by {padding} on each side")
    starts = list(range(0, width - kernel_size + 1, stride))
    ax = _axes(ax, (max(5.0, 0.45 * width + 1.0), 0.45 * len(starts) + 1.6))
    for i in range(width):
        pad = i < padding or i >= padding + size
        ax.add_patch(plt.Rectangle((i, 0), 1, 1, facecolor="0.88" if pad else "C0", edgecolor="white", alpha=1.0 if pad else 0.35))
        ax.text(i + 0.5, 0.5, "0" if pad else str(i - padding + 1), ha="center", va="center", fontsize=8)
    for row, start in enumerate(starts):
        y = -1.0 - 0.8 * row
        ax.add_patch(plt.Rectangle((start + 0.08, y + 0.1), kernel_size - 0.16, 0.55, facecolor="C1", alpha=0.6))
        ax.text(start + kernel_size / 2, y + 0.38, f"output {row + 1}", ha="center", va="center", fontsize=8)
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(-1.0 - 0.8 * len(starts) + 0.4, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{size} pixels (blue), padding {padding} (grey zeros), kernel {kernel_size}, stride {stride}: "
                 "where the window fits (orange)", fontsize=10)
    return ax


def rate_distortion_plane(rates: Sequence[float], distortions: Sequence[float], betas: Sequence[float],
                          ax: plt.Axes | None = None, title: str = "Rate against distortion, one point per KL weight") -> plt.Axes:
    """Points (rate = KL, distortion = -E[log p(x|z)]) labelled by beta, joined in order, with the line
    distortion + rate = -ELBO of the beta = 1 point (points above it have a worse ELBO). Notebook 03."""
    rate, dist, beta = (_as_array(v, n) for v, n in ((rates, "rates"), (distortions, "distortions"), (betas, "betas")))
    if not rate.shape == dist.shape == beta.shape or rate.ndim != 1 or rate.size == 0:
        raise ValueError(f"rates, distortions and betas must be vectors of one length, got {rate.shape}, {dist.shape}, {beta.shape}")
    ax = _axes(ax, (6, 4.5))
    order = np.argsort(beta)
    ax.plot(rate[order], dist[order], "-o", color="C0", zorder=3)
    for r, d, b in zip(rate, dist, beta):
        ax.annotate(f"β = {b:g}", (r, d), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if np.any(np.isclose(beta, 1.0)):
        i = int(np.argmin(np.abs(beta - 1.0)))
        elbo_line = rate[i] + dist[i]
        r_line = np.linspace(0.0, max(rate.max(), elbo_line - dist.min()) * 1.05, 2)
        ax.plot(r_line, elbo_line - r_line, ":", color="black",
                label=f"distortion + rate = {elbo_line:.1f} (the -ELBO at β = 1)")
        ax.legend(frameon=False, fontsize=9, loc="upper right")
    ax.set_xlim(left=0)
    pad = 0.1 * (dist.max() - dist.min() + 1.0)
    ax.set_ylim(dist.min() - pad, dist.max() + pad)
    ax.set_xlabel("rate: KL(q(z|x) || p(z)), nats per digit")
    ax.set_ylabel("distortion: -E[log p(x|z)], nats per digit")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def kl_per_dimension_by_beta(kl: ArrayLike, betas: Sequence[float], threshold: float = 0.1, ax: plt.Axes | None = None,
                             title: str = "KL of each latent dimension, sorted, for each KL weight") -> plt.Axes:
    """One line per beta through the sorted mean KL of each latent dimension, ``kl`` (len(betas), D), on a log
    axis, with the ``threshold`` below which a dimension counts as collapsed (its posterior is the prior). Notebook 03."""
    values = kl.detach().cpu().numpy() if isinstance(kl, torch.Tensor) else np.asarray(kl, dtype=float)
    beta = _as_array(betas, "betas")
    if values.ndim != 2 or values.shape[0] != beta.size or values.shape[1] == 0:
        raise ValueError(f"kl must be (len(betas), latent_dim) = ({beta.size}, D), got shape {values.shape}")
    if not threshold > 0:
        raise ValueError(f"threshold must be a positive number of nats, got {threshold!r}")
    ax = _axes(ax, (6, 4.5))
    dims = np.arange(1, values.shape[1] + 1)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, beta.size))
    for row, b, colour in zip(values, beta, colours):
        active = int((row > threshold).sum())
        ax.plot(dims, np.sort(row)[::-1], "-o", ms=3, color=colour, label=f"β = {b:g}: {active} active")
    ax.axhline(threshold, color="black", ls=":", lw=1.5, label=f"{threshold:g} nats")
    ax.set_yscale("log")
    ax.set_xticks(dims)
    ax.set_xlabel("latent dimension, sorted by its KL")
    ax.set_ylabel("mean KL per digit (nats, log scale)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return ax


def seed_points(values: Sequence[Sequence[float]], labels: Sequence[str], ax: plt.Axes | None = None,
                ylabel: str = "nats", title: str = "") -> plt.Axes:
    """One column per model: a dot per seed and a bar at the mean; the y-axis is fitted to the values, not from 0.

    ``values``: one sequence of per-seed numbers per model, ``labels`` one name per model.
    """
    if len(values) == 0 or len(values) != len(labels):
        raise ValueError(f"need one list of per-seed values per label, got {len(values)} lists and {len(labels)} labels")
    columns = [_as_array(v, "values").reshape(-1) for v in values]
    if any(c.size == 0 for c in columns):
        raise ValueError("every model needs at least one value")
    ax = _axes(ax, (1.3 * len(columns) + 2, 3.5))
    for i, c in enumerate(columns):
        ax.scatter(np.full(c.size, i) + np.linspace(-0.08, 0.08, c.size), c, color=f"C{i}", s=30, zorder=3)
        ax.hlines(c.mean(), i - 0.25, i + 0.25, color="black", lw=2, zorder=2)
        ax.text(i + 0.28, c.mean(), f"{c.mean():.2f}", va="center", fontsize=9)
    low, high = min(c.min() for c in columns), max(c.max() for c in columns)
    pad = 0.15 * (high - low) if high > low else 0.5
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-0.5, len(columns) - 0.2)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(labels)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return ax
