"""The demo's compile-and-run path on a subset of the test split, bit-exact."""

import json

import pytest

from npuforge.demo import DEMOS, run_digits_mlp


@pytest.mark.slow
def test_digits_demo_subset_is_bit_exact(tmp_path):
    result = run_digits_mlp(tmp_path, limit=12, build=False, log=lambda *_: None)
    assert result.bit_exact and result.mismatches == 0
    assert result.samples == 12
    # The hardware's predictions are the int8 reference's: same accuracy on the subset.
    assert result.hw_accuracy == result.int8_accuracy
    assert result.macs_per_inference == 64 * 32 + 32 * 10
    assert result.array_cycles > 0
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["bit_exact"] is True
    for name in ("digits_mlp_int8.npz", "digits_mlp_float.npz", "manifest.json", "confusion.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_demo_list():
    assert "digits-mlp" in DEMOS


def test_cli_demo_list(capsys):
    from npuforge.cli import main
    assert main(["demo", "--list"]) == 0
    assert "digits-mlp" in capsys.readouterr().out


def test_cli_demo_rejects_unknown_name(capsys):
    from npuforge.cli import main
    assert main(["demo", "nope"]) == 2
    assert "demo must be one of digits-mlp, digits-snn, not 'nope'" in capsys.readouterr().err
