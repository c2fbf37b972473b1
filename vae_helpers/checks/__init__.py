"""Checkers for the notebook exercises: each tries the learner's function and names the likely mistake.

A checker prints one line starting with a tick on success and raises ``CheckFailed`` (an
``AssertionError``) with a hint on failure. In an IPython kernel, importing this package installs a
handler that shows a failed check as one short "✗ ..." block, without the checker's frames.
One module per notebook (``ae``, ``vae`` and ``elbo``, ``conv``, ``flows``; the whole-module and
training-loop exercises of 01 and 02 in ``build``). The shared machinery: ``_core`` (verdict, short
feedback, calling the learner), ``_guard`` (refused references as tripwires, reading the learner's
code), ``_judge`` (values and gradients on the same inputs and noise, fresh noise) and ``_match``
(a module's weights set by behaviour).
Every checker has unit tests that feed it its catalogue of wrong, cheating and valid answers.
"""

from ._core import (CheckFailed, call_learner, close, compare, expect_tensor, install_short_feedback, ok,
                    points_table, seeded)
from .ae import check_autoencoder_forward, check_cross_entropy_loss, check_squared_error_loss, check_training_step
from .build import check_autoencoder_module, check_train_autoencoder, check_vae_module
from .conv import (check_conv_decode, check_conv_encoder, check_conv_output_size, check_interpolate_latents,
                   check_receptive_field)
from .flows import check_constrain_u, check_energy_u1, check_flow_free_energy, check_planar_transform, check_sample_posterior
from .elbo import check_iwae_estimate, check_negative_elbo
from .vae import (check_active_units, check_gaussian_kl, check_gaussian_log_likelihood, check_kl_per_dimension,
                  check_reparameterize)

__all__ = [
    "CheckFailed", "call_learner", "close", "compare", "expect_tensor", "install_short_feedback", "ok", "points_table",
    "seeded",
    "check_autoencoder_forward", "check_cross_entropy_loss", "check_squared_error_loss", "check_training_step",
    "check_autoencoder_module", "check_train_autoencoder", "check_vae_module", "check_conv_encoder",
    "check_sample_posterior",
    "check_gaussian_kl", "check_gaussian_log_likelihood", "check_reparameterize", "check_negative_elbo",
    "check_iwae_estimate", "check_kl_per_dimension", "check_active_units",
    "check_conv_output_size", "check_conv_decode", "check_interpolate_latents", "check_receptive_field",
    "check_planar_transform", "check_constrain_u", "check_flow_free_energy", "check_energy_u1",
]

install_short_feedback()
