"""The digits examples run as documented and keep their promises: the ResNet and the
MobileNet-style network reach 97% held-out accuracy, the autoencoder reconstructs held-out
digits, and each saves its picture."""

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in ("train_digits", "train_digits_modern", "autoencoder_digits"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("model, epochs", [("resnet", 15), ("mobilenet", 25)])
def test_modern_networks_reach_97_percent(examples_on_path, tmp_path, capsys, model, epochs):
    modern = importlib.import_module("train_digits_modern")
    out = tmp_path / f"{model}.png"
    assert modern.main(["--model", model, "--epochs", str(epochs), "--no-progress", "--out", str(out)]) == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("held-out accuracy")][-1]
    accuracy = float(line.split()[2].rstrip("%")) / 100
    assert accuracy >= 0.97, line
    assert out.stat().st_size > 10_000


def test_autoencoder_reconstructs_held_out_digits(examples_on_path, tmp_path):
    autoencoder = importlib.import_module("autoencoder_digits")
    args = autoencoder.parse_args(["--epochs", "30", "--no-progress"])
    model, x_test, error = autoencoder.train(args)
    # Standardised digits have variance 1: predicting the mean would score about 1.
    assert error < 0.1
    out = tmp_path / "ae.png"
    autoencoder.plot(model, x_test, out)
    assert out.stat().st_size > 5_000
