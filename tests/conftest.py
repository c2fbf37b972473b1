"""Shared test settings: a headless matplotlib backend and quiet progress bars."""

import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("VAE_FAST", "1")
