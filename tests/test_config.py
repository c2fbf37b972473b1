import pytest

from vae_helpers import config


@pytest.mark.parametrize("raw, fast", [("1", True), ("true", True), ("0", False), ("", False), ("no", False)])
def test_pick_follows_vae_fast(monkeypatch, raw, fast):
    monkeypatch.setenv("VAE_FAST", raw)
    assert config.is_fast() is fast
    assert config.pick(full=30, fast=1) == (1 if fast else 30)


def test_unset_means_full_mode(monkeypatch):
    monkeypatch.delenv("VAE_FAST", raising=False)
    assert config.pick(full="full", fast="fast") == "full"


def test_garbage_flag_is_an_error(monkeypatch):
    monkeypatch.setenv("VAE_FAST", "maybe")
    with pytest.raises(ValueError, match="VAE_FAST"):
        config.is_fast()


def test_headline_prints_one_line_and_returns_nothing(capsys):
    assert config.headline("test NLL", 93.456, "nats") is None  # a returned value would show again as Out[ ]
    assert capsys.readouterr().out == "Headline metric: test NLL = 93.46 nats\n"


@pytest.mark.parametrize("name, value, err", [("", 1.0, TypeError), ("x", "1", TypeError), ("x", float("nan"), ValueError)])
def test_headline_rejects_bad_input(name, value, err):
    with pytest.raises(err):
        config.headline(name, value)
