"""Interactive latent-space explorers (notebook 03): live ipywidgets in JupyterLab, a static picture elsewhere.

Each explorer is shown as ONE output whose display bundle holds both the widget view and a PNG
of the explorer's current state. A front end with a widget manager (JupyterLab, Notebook 7)
draws the live widget; anything without one (nbval, ``jupyter nbconvert --execute``, static
viewers, a terminal) shows the PNG instead of a bare ``Box(...)`` repr.

A widget lives only as long as its kernel. The project's JupyterLab saves widget state into the
notebook (``saveState``, set in ``lab/overrides.json`` by ``make install``), so a notebook that was
saved and reopened, or whose kernel was restarted, shows each explorer's last picture; every
explorer carries a one-line note (``STALE_NOTE``) that says to run the cell again to use it.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Sequence

import ipywidgets as W
import matplotlib.image
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from .plotting import tile, to_images

_BLANK = " "  # an empty description would leave the old text on the button (ipywidgets only redraws non-empty ones)
STALE_NOTE = ("<small><i>Live only while this cell's kernel runs: after reopening the notebook or restarting "
              "the kernel, the picture is the last one drawn; run this cell again to explore.</i></small>")
_STEP = 0.05  # slider resolution of the latent explorer
_TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def _check_model(model: Any) -> int:
    """The model's latent size; TypeError unless it has ``encode``, ``mean_image`` and ``latent_dim``."""
    if not (hasattr(model, "encode") and hasattr(model, "mean_image") and isinstance(getattr(model, "latent_dim", None), int)):
        raise TypeError("model must be a VAE-like module with encode(x), mean_image(z) and an int latent_dim")
    return model.latent_dim


@torch.no_grad()
def decode_images(model: nn.Module, z: torch.Tensor) -> np.ndarray:
    """Mean images E[x|z] for codes ``(N, D)`` as a float array ``(N, 28, 28)`` in [0, 1]."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    out = model.mean_image(z.to(device, torch.float32))
    model.train(was_training)
    return to_images(out)


def image_png(image: np.ndarray, scale: int = 6) -> bytes:
    """PNG bytes of one grey image ``(H, W)`` in [0, 1], ink dark, each pixel blown up to ``scale`` x ``scale``."""
    big = np.kron(np.clip(image, 0.0, 1.0), np.ones((scale, scale), dtype=np.float32))
    buf = io.BytesIO()
    matplotlib.image.imsave(buf, big, cmap="gray_r", vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` (made without pyplot, so the inline backend never shows it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


class Explorer:
    """Base class: ``widget`` is the live ipywidgets box, ``figure()`` a static picture of its current state."""

    widget: W.Widget
    summary: str = "latent explorer"

    def figure(self) -> Figure:
        raise NotImplementedError

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Widget view plus ``image/png`` fallback plus a readable ``text/plain``, in one bundle."""
        bundle = dict(self.widget._repr_mimebundle_() or {})
        bundle["image/png"] = base64.b64encode(figure_png(self.figure())).decode("ascii")
        bundle["text/plain"] = f"<{self.summary}: live widget in JupyterLab, static figure elsewhere>"
        return bundle


class LatentExplorer(Explorer):
    """One slider per latent dimension (and a clickable pad for a 2-D latent) redrawing the decoded digit."""

    def __init__(self, model: nn.Module, start: torch.Tensor | None = None, codes: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, limit: float | None = None, pad_size: int = 11):
        self.model, self.latent_dim = model, _check_model(model)
        D = self.latent_dim
        z0 = torch.zeros(D) if start is None else torch.as_tensor(start, dtype=torch.float32).reshape(-1).cpu()
        if z0.numel() != D:
            raise ValueError(f"start must hold {D} values (one per latent dimension), got {z0.numel()}")
        if codes is not None and (codes.dim() != 2 or codes.shape[1] != D):
            raise ValueError(f"codes must be (N, {D}), got {tuple(codes.shape)}")
        if limit is not None and not (isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0):
            raise ValueError(f"limit must be a positive number or None (fit the codes), got {limit!r}")
        self.codes = None if codes is None else codes.detach().cpu()
        self.labels = None if labels is None else torch.as_tensor(labels).cpu()
        self.limit = float(limit) if limit is not None else _fitting_limit(z0, self.codes)
        self.start = z0.clamp(-self.limit, self.limit)
        self.summary = f"latent explorer ({D}-D)"
        self._z = self.start.clone()  # the exact code; the sliders show it on their grid of steps
        self.sliders = [W.FloatSlider(value=_on_grid(float(v), _STEP), min=-self.limit, max=self.limit, step=_STEP,
                                      description=f"z{i + 1}", readout_format=".2f", layout=W.Layout(width="260px"))
                        for i, v in enumerate(self.start)]
        self.image = W.Image(value=image_png(self.digit()), format="png", width=168, height=168)
        self.sample_button = W.Button(description="sample z ~ N(0, I)", layout=W.Layout(width="160px"))
        self.reset_button = W.Button(description="reset", layout=W.Layout(width="80px"))
        self.sample_button.on_click(lambda _: self.set_z(torch.randn(D)))
        self.reset_button.on_click(lambda _: self.set_z(self.start))
        self._busy = False
        for i, s in enumerate(self.sliders):
            s.observe(lambda change, i=i: self._slider_moved(i, change["new"]), names="value")
        cols = 1 if D <= 8 else 2 if D <= 20 else 3
        panel = W.GridBox(self.sliders, layout=W.Layout(grid_template_columns=f"repeat({cols}, 270px)"))
        right = W.VBox([W.HTML("<b>decoded digit</b> E[x | z]"), self.image, W.HBox([self.sample_button, self.reset_button])])
        self.pad: list[W.Button] = []
        left: list[W.Widget] = [panel]
        if D == 2:
            self.pad_values = np.linspace(-self.limit, self.limit, pad_size)
            left = [W.HTML("<b>click the pad</b> (z1 across, z2 up) or drag the sliders"), self._make_pad(), panel]
        self.widget = W.VBox([W.HBox([W.VBox(left), right]), W.HTML(STALE_NOTE)])
        self._mark_pad()

    def _make_pad(self) -> W.GridBox:
        """A grid of small buttons over [-limit, limit]^2, coloured by the label of the nearest code."""
        n = len(self.pad_values)
        for row in range(n):
            for col in range(n):
                z = torch.tensor([self.pad_values[col], self.pad_values[n - 1 - row]], dtype=torch.float32)
                button = W.Button(description=_BLANK, tooltip=f"z = ({z[0]:.1f}, {z[1]:.1f})",
                                  layout=W.Layout(width="22px", height="22px", padding="0", margin="0"))
                colour = self._nearest_colour(z)
                if colour:
                    button.style.button_color = colour
                button.on_click(lambda _, z=z: self.set_z(z))
                self.pad.append(button)
        return W.GridBox(self.pad, layout=W.Layout(grid_template_columns=f"repeat({n}, 24px)", grid_gap="1px"))

    def _nearest_colour(self, z: torch.Tensor) -> str | None:
        if self.codes is None or self.labels is None or len(self.codes) == 0:
            return None
        label = int(self.labels[torch.argmin(((self.codes - z) ** 2).sum(1))])
        return _TAB10[label % 10] + "80"  # half-transparent

    def _mark_pad(self) -> None:
        if not self.pad:
            return
        n = len(self.pad_values)
        z = self.z()
        col = int(np.argmin(np.abs(self.pad_values - float(z[0]))))
        row = n - 1 - int(np.argmin(np.abs(self.pad_values - float(z[1]))))
        for i, button in enumerate(self.pad):
            button.description = "●" if i == row * n + col else _BLANK

    def z(self) -> torch.Tensor:
        """The current code ``(D,)``: what the sliders show, exact where the code was set by ``set_z``."""
        return self._z.clone()

    def _slider_moved(self, i: int, value: float) -> None:
        """A slider moved: the learner chose ``value`` for dimension ``i`` (not so while ``set_z`` moves them).

        The sliders only ever hold values on their grid, so the page never sends back a rounded copy
        of the exact code; a new value is always the learner's.
        """
        if self._busy:
            return
        self._z[i] = value
        self._redraw()

    def digit(self) -> np.ndarray:
        """The decoded image ``(28, 28)`` at the current code."""
        return decode_images(self.model, self.z()[None])[0]

    def set_z(self, z: torch.Tensor) -> None:
        """Move every slider to ``z`` ``(D,)`` and redraw once."""
        z = torch.as_tensor(z, dtype=torch.float32).reshape(-1)
        if z.numel() != self.latent_dim:
            raise ValueError(f"z must hold {self.latent_dim} values, got {z.numel()}")
        self._z = z.clamp(-self.limit, self.limit).clone()
        self._busy = True
        try:
            for s, v in zip(self.sliders, self._z):
                s.value = _on_grid(float(v), _STEP)
        finally:
            self._busy = False
        self._redraw()

    def _redraw(self) -> None:
        self.image.value = image_png(self.digit())
        self._mark_pad()

    def figure(self) -> Figure:
        """Static picture: where z is (on the codes for 2-D, as bars otherwise) and the digit it decodes to."""
        fig = Figure(figsize=(8.5, 3.8), layout="constrained")
        ax_z, ax_x = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.6, 1]})
        z = self.z().numpy()
        if self.latent_dim == 2:
            if self.codes is not None:
                colours = None if self.labels is None else [_TAB10[int(k) % 10] for k in self.labels]
                ax_z.scatter(self.codes[:, 0], self.codes[:, 1], s=2, c=colours, alpha=0.5)
            ax_z.plot(z[0], z[1], "k*", ms=16, label=f"z = ({z[0]:.2f}, {z[1]:.2f})")
            ax_z.set(xlim=(-self.limit, self.limit), ylim=(-self.limit, self.limit), xlabel="$z_1$", ylabel="$z_2$")
            ax_z.legend(loc="upper right")
            ax_z.set_title("Position on the 2-D pad")
        else:
            ax_z.barh(np.arange(self.latent_dim), z, color="C0")
            ax_z.set(xlim=(-self.limit, self.limit), xlabel="slider value", ylabel="latent dimension")
            step = 1 if self.latent_dim <= 16 else 2 if self.latent_dim <= 32 else 4
            ax_z.set_yticks(np.arange(0, self.latent_dim, step), [f"z{i + 1}" for i in range(0, self.latent_dim, step)])
            ax_z.invert_yaxis()
            ax_z.set_title(f"Slider settings ({self.latent_dim} dimensions)")
        ax_x.imshow(self.digit(), cmap="gray_r", vmin=0, vmax=1)
        ax_x.set(xticks=[], yticks=[], title="Decoded digit E[x | z]")
        fig.suptitle("Latent explorer (static view; run the notebook in JupyterLab to move the sliders)", fontsize=10)
        return fig


class InterpolationExplorer(Explorer):
    """A slider t in [0, 1] along the straight line between the codes of two chosen digits."""

    def __init__(self, model: nn.Module, images: torch.Tensor, start: int = 0, end: int = 1,
                 labels: Sequence[int] | torch.Tensor | None = None, num_steps: int = 9):
        self.model = model
        _check_model(model)
        if not isinstance(images, torch.Tensor) or images.dim() < 2 or len(images) < 2:
            raise ValueError("images must be a tensor holding at least two digits, (N, 784) or (N, 1, 28, 28)")
        if not (0 <= start < len(images) and 0 <= end < len(images)):
            raise ValueError(f"start and end must be indices into the {len(images)} images, got {start} and {end}")
        self.images = images.detach().cpu()
        self.num_steps = num_steps
        self.summary = "interpolation explorer"
        names = [f"#{i}" + ("" if labels is None else f" (a {int(labels[i])})") for i in range(len(images))]
        options = list(zip(names, range(len(images))))
        self.start_pick = W.Dropdown(options=options, value=start, description="from", layout=W.Layout(width="180px"))
        self.end_pick = W.Dropdown(options=options, value=end, description="to", layout=W.Layout(width="180px"))
        self.t_slider = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="t", readout_format=".2f",
                                      layout=W.Layout(width="420px"))
        self.views = [W.Image(format="png", width=112, height=112) for _ in range(3)]
        self.strip = W.Image(format="png", layout=W.Layout(align_self="flex-start"))  # its own size, not stretched
        self._mu = self._encode()
        self._redraw_all()
        self.start_pick.observe(self._endpoints_changed, names="value")
        self.end_pick.observe(self._endpoints_changed, names="value")
        self.t_slider.observe(lambda _: self._redraw_current(), names="value")
        captions = ["start digit", "decoded z(t)", "end digit"]
        row = W.HBox([W.VBox([W.HTML(f"<b>{c}</b>"), v]) for c, v in zip(captions, self.views)])
        self.widget = W.VBox([W.HBox([self.start_pick, self.end_pick]), self.t_slider, row,
                              W.HTML("<b>the whole path</b>, t = 0 ... 1"), self.strip, W.HTML(STALE_NOTE)])

    @torch.no_grad()
    def _encode(self) -> torch.Tensor:
        """Posterior means of the two chosen digits, ``(2, D)``."""
        pair = self.images[[self.start_pick.value, self.end_pick.value]]
        param = next(self.model.parameters(), None)
        was_training = self.model.training
        self.model.eval()
        mu, _ = self.model.encode(pair.to(param.device if param is not None else "cpu"))
        self.model.train(was_training)
        return mu.cpu()

    def z_at(self, t: float) -> torch.Tensor:
        """The code ``(D,)`` a fraction ``t`` of the way from the start digit's mean to the end digit's."""
        return (1.0 - t) * self._mu[0] + t * self._mu[1]

    def path(self) -> np.ndarray:
        """Decoded images ``(num_steps, 28, 28)`` at evenly spaced t from 0 to 1."""
        ts = torch.linspace(0.0, 1.0, self.num_steps)
        return decode_images(self.model, torch.stack([self.z_at(float(t)) for t in ts]))

    def _endpoints_changed(self, _change: Any = None) -> None:
        self._mu = self._encode()
        self._redraw_all()

    def _redraw_current(self) -> None:
        self.views[1].value = image_png(decode_images(self.model, self.z_at(self.t_slider.value)[None])[0], scale=4)

    def _redraw_all(self) -> None:
        pair = to_images(self.images[[self.start_pick.value, self.end_pick.value]])
        self.views[0].value = image_png(pair[0], scale=4)
        self.views[2].value = image_png(pair[1], scale=4)
        strip = tile(self.path(), ncols=self.num_steps, pad=2, fill=0.0)  # (H, W)
        self.strip.value = image_png(strip, scale=2)
        self.strip.width, self.strip.height = str(2 * strip.shape[1]), str(2 * strip.shape[0])  # pixels, as drawn
        self._redraw_current()

    def figure(self) -> Figure:
        """Static picture: the two originals and the decoded path, the current t framed in red."""
        fig = Figure(figsize=(1.0 * (self.num_steps + 3), 1.9), layout="constrained")
        axes = fig.subplots(1, self.num_steps + 2)
        pair = to_images(self.images[[self.start_pick.value, self.end_pick.value]])
        ts = np.linspace(0.0, 1.0, self.num_steps)
        current = int(np.argmin(np.abs(ts - self.t_slider.value)))
        panels = [(pair[0], "start")] + [(img, f"t={t:.2f}") for img, t in zip(self.path(), ts)] + [(pair[1], "end")]
        for i, (ax, (img, title)) in enumerate(zip(axes, panels)):
            ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
            ax.set(xticks=[], yticks=[])
            ax.set_title(title, fontsize=8)
            if i - 1 == current:
                for side in ax.spines.values():
                    side.set(color="red", linewidth=2.5)
        fig.suptitle("Interpolation explorer (static view; the slider moves the red frame in JupyterLab)", fontsize=10)
        return fig


def _on_grid(value: float, step: float) -> float:
    """``value`` rounded to the nearest multiple of ``step`` (what a slider with that step can show)."""
    return round(round(value / step) * step, 10)


def _fitting_limit(start: torch.Tensor, codes: torch.Tensor | None) -> float:
    """Slider range: at least 3 (the prior's +-3 sigma), widened to hold the start code and 99% of ``codes``."""
    reach = [3.0, float(start.abs().max()) if start.numel() else 0.0]
    if codes is not None and len(codes):
        reach.append(float(torch.quantile(codes.abs().flatten().float(), 0.99)))
    return float(np.ceil(max(reach) * 2) / 2)  # to the next half unit


def latent_explorer(model: nn.Module, start: torch.Tensor | None = None, codes: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None, limit: float | None = None) -> LatentExplorer:
    """Sliders (and a 2-D pad) over the latent space of ``model``, showing the decoded digit live."""
    return LatentExplorer(model, start=start, codes=codes, labels=labels, limit=limit)


def interpolation_explorer(model: nn.Module, images: torch.Tensor, start: int = 0, end: int = 1,
                           labels: Sequence[int] | torch.Tensor | None = None) -> InterpolationExplorer:
    """A slider between the posterior means of ``images[start]`` and ``images[end]``, decoded live."""
    return InterpolationExplorer(model, images, start=start, end=end, labels=labels)
