"""vae_helpers: the shared code behind the vae-notebooks teaching series."""

__version__ = "0.1.0"
