"""The latent explorers of notebook 03: live widgets that redraw, and a static PNG in the same display bundle."""

import base64
import io

import matplotlib.image
import nbformat
import numpy as np
import pytest
import torch

from vae_helpers import widgets
from vae_helpers.models import ConvVAE, ConvVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def tiny_model(latent_dim: int = 2) -> ConvVAE:
    torch.manual_seed(0)
    config = ConvVAEConfig(latent_dim=latent_dim, channels=(4, 6), strides=(2, 2), hidden_dim=8, decoder_channels=(6, 4))
    model = ConvVAE(config).eval()
    with torch.no_grad():  # livelier weights than the default init, so different codes decode to different images
        for p in model.parameters():
            p.normal_(0.0, 0.4)
    return model


def read_png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return matplotlib.image.imread(io.BytesIO(data), format="png")


def assert_bundle(explorer: widgets.Explorer) -> None:
    bundle = explorer._repr_mimebundle_()
    assert bundle[WIDGET_MIME]["model_id"] == explorer.widget.model_id
    image = read_png(base64.b64decode(bundle["image/png"]))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert "static figure elsewhere" in bundle["text/plain"] and "Box(" not in bundle["text/plain"]


def test_2d_explorer_has_a_pad_that_moves_the_sliders_and_redraws():
    model = tiny_model(2)
    codes, labels = torch.randn(50, 2), torch.randint(0, 10, (50,))
    explorer = widgets.latent_explorer(model, codes=codes, labels=labels, limit=3.0)
    assert len(explorer.sliders) == 2 and len(explorer.pad) == 11 * 11
    assert all(b.style.button_color for b in explorer.pad), "pad cells are coloured by the nearest code's label"
    assert [b.description for b in explorer.pad].count("●") == 1
    before = explorer.image.value
    explorer.pad[0].click()  # top-left corner: z1 = -3, z2 = +3
    assert torch.allclose(explorer.z(), torch.tensor([-3.0, 3.0]))
    assert explorer.image.value != before
    assert explorer.pad[0].description == "●"
    expected = widgets.image_png(widgets.decode_images(model, torch.tensor([[-3.0, 3.0]]))[0])
    assert explorer.image.value == expected
    assert_bundle(explorer)


def test_sliders_redraw_and_buttons_reset_or_sample():
    model = tiny_model(5)
    start = torch.tensor([0.5, -0.5, 1.0, 0.0, 2.0])
    explorer = widgets.latent_explorer(model, start=start)
    assert len(explorer.sliders) == 5 and explorer.pad == []
    first = explorer.image.value
    explorer.sliders[2].value = -2.5
    assert explorer.image.value != first
    explorer.reset_button.click()
    assert torch.allclose(explorer.z(), start) and explorer.image.value == first
    torch.manual_seed(1)
    explorer.sample_button.click()
    assert not torch.allclose(explorer.z(), start)
    assert_bundle(explorer)


def test_interpolation_explorer_follows_the_slider_and_the_chosen_digits():
    model = tiny_model(3)
    images = torch.rand(6, 1, 28, 28)
    explorer = widgets.interpolation_explorer(model, images, start=1, end=4, labels=list(range(6)))
    mu, _ = model.encode(images[[1, 4]])
    explorer.t_slider.value = 0.0
    assert explorer.views[1].value == widgets.image_png(widgets.decode_images(model, mu[:1])[0], scale=4)
    explorer.t_slider.value = 1.0
    assert explorer.views[1].value == widgets.image_png(widgets.decode_images(model, mu[1:])[0], scale=4)
    path = explorer.path()
    explorer.end_pick.value = 5
    assert not np.allclose(explorer.path(), path)
    assert bytes(explorer.strip.value) == widgets.image_png(widgets.tile(explorer.path(), ncols=9, pad=2, fill=0.0), scale=2)
    assert torch.allclose(explorer.z_at(1.0), model.encode(images[5:6])[0][0], atol=1e-6)
    assert explorer.path().shape == (explorer.num_steps, 28, 28)
    assert_bundle(explorer)


def test_static_figures_are_made_without_pyplot():
    import matplotlib.pyplot as plt

    plt.close("all")
    explorer = widgets.latent_explorer(tiny_model(2), codes=torch.randn(20, 2), labels=torch.arange(20) % 10)
    explorer._repr_mimebundle_()
    widgets.interpolation_explorer(tiny_model(2), torch.rand(3, 784))._repr_mimebundle_()
    assert plt.get_fignums() == [], "a pyplot figure would also be shown by the inline backend"


def test_bad_inputs_are_rejected():
    model = tiny_model(2)
    with pytest.raises(TypeError):
        widgets.latent_explorer(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="one per latent dimension"):
        widgets.latent_explorer(model, start=torch.zeros(3))
    with pytest.raises(ValueError, match="codes"):
        widgets.latent_explorer(model, codes=torch.zeros(5, 3))
    with pytest.raises(ValueError, match="indices"):
        widgets.interpolation_explorer(model, torch.rand(3, 784), start=0, end=3)
    with pytest.raises(ValueError, match="at least two"):
        widgets.interpolation_explorer(model, torch.rand(1, 784))


@pytest.mark.slow
def test_headless_execution_keeps_a_png_beside_the_widget(tmp_path):
    """Executed without a front end (as nbval and nbconvert --execute do), the output still carries the picture."""
    from vae_helpers.runner import execute_notebook

    source = ("import torch\nfrom vae_helpers import widgets\nfrom vae_helpers.models import ConvVAE, ConvVAEConfig\n"
              "model = ConvVAE(ConvVAEConfig(channels=(4, 6), strides=(2, 2), hidden_dim=8, decoder_channels=(6, 4)))\n"
              "widgets.latent_explorer(model)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb = execute_notebook(nb, cwd=tmp_path, timeout=120)
    (output,) = nb.cells[0].outputs
    assert {"image/png", WIDGET_MIME, "text/plain"} <= set(output["data"])
    read_png(base64.b64decode(output["data"]["image/png"]))
    assert "Box(" not in output["data"]["text/plain"]


def test_reset_lands_exactly_on_the_start_code_even_after_the_sliders_round_it():
    model = tiny_model(16)
    start = torch.linspace(-1.234, 2.345, 16)
    explorer = widgets.latent_explorer(model, start=start)
    first = explorer.image.value
    for s in explorer.sliders:  # the sliders show the code on their grid: nothing for the page to round
        assert s.value == round(round(s.value / s.step) * s.step, 10)
    assert torch.equal(explorer.z(), start)
    explorer.sample_button.click()
    assert not torch.equal(explorer.z(), start)
    explorer.reset_button.click()
    assert torch.equal(explorer.z(), start)
    assert explorer.image.value == first
    explorer.sliders[3].value = 0.5  # a real move is taken
    assert explorer.z()[3] == 0.5 and explorer.image.value != first
    explorer.reset_button.click()
    near = round(round(float(start[0]) / 0.05) * 0.05 + 0.05, 10)  # one step from the start code's grid value
    explorer.sliders[0].value = near  # within a step of the exact code, still the learner's choice
    assert abs(float(explorer.z()[0]) - near) < 1e-6 and explorer.image.value != first


def test_slider_range_holds_the_start_code_and_the_codes():
    model = tiny_model(2)
    codes = torch.cat([torch.randn(200, 2), torch.tensor([[4.2, -3.9]])]).repeat(3, 1)
    explorer = widgets.latent_explorer(model, codes=codes, start=torch.tensor([4.2, -3.9]))
    assert explorer.limit >= 4.2 and explorer.sliders[0].max == explorer.limit
    assert torch.allclose(explorer.z(), torch.tensor([4.2, -3.9]))  # not clipped to +-3
    assert widgets.latent_explorer(model).limit == 3.0
    with pytest.raises(ValueError, match="limit"):
        widgets.latent_explorer(model, limit=-1)


def test_every_explorer_says_how_to_bring_it_back_and_the_strip_keeps_its_shape():
    model = tiny_model(2)
    explorers = [widgets.latent_explorer(model), widgets.interpolation_explorer(model, torch.rand(4, 784), 0, 3)]
    for explorer in explorers:
        notes = [w.value for w in explorer.widget.children if isinstance(w, widgets.W.HTML)]
        assert any("run this cell again" in n for n in notes)
    strip = explorers[1].strip
    height, width = read_png(strip.value).shape[:2]
    assert (strip.width, strip.height) == (str(width), str(height)), "shown at its own size"
    assert strip.layout.align_self == "flex-start", "a stretched flex item would distort the strip"
