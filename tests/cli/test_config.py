"""Design parameters from TOML files and command-line flags (npuforge.config)."""

import argparse
from dataclasses import fields

import pytest

from npuforge.config import (
    ConfigError,
    add_design_arguments,
    add_workload_arguments,
    config_from_args,
    default_workload_shape,
    design_table,
    load_config,
    read_toml,
    workload_from_args,
)
from npuforge.generators import MacArrayConfig
from npuforge.generators.mac_array import LIMITS


def _parser():
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_design_arguments(parser, "mac-array")
    add_workload_arguments(parser)
    return parser


def _config(argv):
    return config_from_args(_parser().parse_args(argv))


def _write(tmp_path, text, name="design.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- flags ---------------------------------------------------------------------------------------

def test_no_flags_give_the_dataclass_defaults():
    assert _config([]) == MacArrayConfig()


# One value per field that differs from the default, with the flags that set it.
FLAG_CASES = {
    "rows": (["--rows", "7"], 7),
    "cols": (["--cols", "3"], 3),
    "dataflow": (["--dataflow", "ws"], "ws"),
    "in_bits": (["--in-bits", "5"], 5),
    "in_signed": (["--in-unsigned"], False),
    "w_bits": (["--w-bits", "12"], 12),
    "w_signed": (["--w-unsigned"], False),
    "acc_bits": (["--acc-bits", "20"], 20),
    "max_m": (["--max-m", "17"], 17),
    "max_k": (["--max-k", "9"], 9),
    "max_n": (["--max-n", "33"], 33),
    "multiplier": (["--multiplier", "infer"], "infer"),
    "mul_latency": (["--mul-latency", "2"], 2),
    "lut_multiplier": (["--lut-multiplier", "carry"], "carry"),
    "dsp_blocks": (["--dsp-blocks", "2"], 2),
    "operand_gating": (["--operand-gating"], True),
    "requant_radix": (["--requant-radix", "31"], 31),
    "out_signed": (["--out-unsigned"], False),
}


def test_every_field_has_a_flag():
    assert set(FLAG_CASES) == {f.name for f in fields(MacArrayConfig)}


@pytest.mark.parametrize("field", sorted(FLAG_CASES))
def test_flag_sets_its_field(field):
    argv, value = FLAG_CASES[field]
    default = getattr(MacArrayConfig(), field)
    assert value != default
    config = _config(argv)
    assert getattr(config, field) == value
    # ... and nothing else.
    others = {f.name: getattr(config, f.name) for f in fields(config) if f.name != field}
    assert others == {k: v for k, v in MacArrayConfig().to_dict().items() if k != field}


def test_positive_switches_and_auto():
    config = _config(["--in-signed", "--acc-bits", "auto"])
    assert config.in_signed is True and config.acc_bits is None


def test_switch_pair_is_exclusive():
    with pytest.raises(argparse.ArgumentError, match="not allowed with argument"):
        _parser().parse_args(["--in-signed", "--in-unsigned"])


@pytest.mark.parametrize("argv, message", [
    (["--rows", "0"], "rows must be an integer in 1..64, not 0"),
    (["--rows", "65"], "rows must be an integer in 1..64, not 65"),
    (["--rows", "four"], "rows must be an integer in 1..64, not 'four'"),
    (["--in-bits", "1.5"], "in_bits must be an integer in 2..16, not '1.5'"),
    (["--dataflow", "xs"], "dataflow must be one of 'os', 'ws', not 'xs'"),
    (["--multiplier", "dsp9"], "multiplier must be one of 'lut', 'infer', 'dsp', 'mixed', not 'dsp9'"),
    (["--acc-bits", "8"], "acc_bits must be at least the product width 16"),
    (["--mul-latency", "5"], "mul_latency must be an integer in 0..4, not 5"),
    (["--mul-latency", "3"], "mul_latency must be in 0..2 with tree logic multipliers, not 3"),
    (["--lut-multiplier", "wallace"], "lut_multiplier must be one of 'tree', 'carry', not 'wallace'"),
])
def test_bad_flag_values_name_the_parameter(argv, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        _config(argv)


# -- TOML ------------------------------------------------------------------------------------------

def test_toml_sets_the_parameters(tmp_path):
    path = _write(tmp_path, """
        [mac-array]
        rows = 8
        cols = 2
        dataflow = "ws"
        in_bits = 4
        in_signed = false
        acc_bits = "auto"
        max_k = 16
    """.replace("        ", ""))
    expected = MacArrayConfig(rows=8, cols=2, dataflow="ws", in_bits=4, in_signed=False, max_k=16)
    assert load_config(path) == expected
    assert _config(["--config", str(path)]) == expected


def test_flags_override_the_file(tmp_path):
    path = _write(tmp_path, '[mac-array]\nrows = 8\ndataflow = "ws"\nacc_bits = 30\n')
    config = _config(["--config", str(path), "--rows", "2", "--acc-bits", "auto", "--cols", "5"])
    assert config == MacArrayConfig(rows=2, cols=5, dataflow="ws", acc_bits=None)
    assert load_config(path, rows=3) == MacArrayConfig(rows=3, dataflow="ws", acc_bits=30)


def test_unknown_key_is_named(tmp_path):
    path = _write(tmp_path, "[mac-array]\nrows = 2\nrowz = 3\n")
    with pytest.raises(ConfigError, match=r"design\.toml: unknown mac-array parameter 'rowz' "
                                          r"\(did you mean 'rows'\?\); known: rows, cols, "):
        _config(["--config", str(path)])
    path = _write(tmp_path, "[mac-array]\nin-bits = 4\n", "hyphen.toml")
    with pytest.raises(ConfigError,
                       match=r"unknown mac-array parameter 'in-bits' \(did you mean 'in_bits'\?\)"):
        load_config(path)


def test_bad_value_in_file_names_file_and_parameter(tmp_path):
    path = _write(tmp_path, "[mac-array]\nrows = 0\ncols = 2\n")
    with pytest.raises(ConfigError, match=r"^.*design\.toml: rows must be an integer in 1\.\.64, not 0$"):
        _config(["--config", str(path), "--cols", "3"])
    # The flag overrides the bad value: no error.
    assert _config(["--config", str(path), "--rows", "3"]).rows == 3
    # A bad flag value is the flag's problem, not the file's.
    with pytest.raises(ConfigError, match=r"^cols must be an integer in 1\.\.64, not 99$"):
        _config(["--config", str(path), "--rows", "3", "--cols", "99"])


def test_wrong_types_in_file(tmp_path):
    path = _write(tmp_path, '[mac-array]\nrows = "4"\n')
    with pytest.raises(ConfigError, match=r"rows must be an integer in 1\.\.64, not '4'"):
        load_config(path)
    path = _write(tmp_path, "[mac-array]\nin_signed = 1\n", "b.toml")
    with pytest.raises(ConfigError, match="in_signed must be True or False, not 1"):
        load_config(path)


def test_missing_table_and_broken_files(tmp_path):
    path = _write(tmp_path, "rows = 4\n")
    with pytest.raises(ConfigError, match=r"design\.toml: no \[mac-array\] table"):
        load_config(path)
    path = _write(tmp_path, "[mac-array\nrows = 4\n", "broken.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        read_toml(path)
    with pytest.raises(ConfigError, match=r"cannot read config file '.*missing\.toml'"):
        _config(["--config", str(tmp_path / "missing.toml")])
    path = _write(tmp_path, "mac-array = 3\n", "scalar.toml")
    with pytest.raises(ConfigError, match=r"\[mac-array\] must be a table of parameters, not 3"):
        load_config(path)


def test_other_tables_are_left_alone(tmp_path):
    data = read_toml(_write(tmp_path, '[board]\nname = "icebreaker"\n[mac-array]\ncols = 2\n'))
    assert design_table(data) == {"cols": 2}
    assert design_table({"board": {}}) == {}


# -- workload ------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [MacArrayConfig(), MacArrayConfig(rows=16, cols=1, max_m=20, max_k=3)])
def test_default_workload_fits_and_tiles(config):
    m, k, n = default_workload_shape(config)
    config.check_shape(m, k, n)
    # Every tiled axis spans more than one tile unless the buffers forbid it.
    assert m == min(config.max_m, 2 * config.rows + 1)
    assert k == min(config.max_k, 2 * config.rows + 1)
    assert n == min(config.max_n, 2 * config.cols + 1)


def test_workload_flags():
    parser = _parser()
    config = MacArrayConfig()
    assert workload_from_args(parser.parse_args([]), config) == (9, 9, 9, 1, False)
    args = parser.parse_args(["--m", "32", "--k", "1", "--n", "7", "--seed", "0", "--requant"])
    assert workload_from_args(args, config) == (32, 1, 7, 0, True)
    for argv, message in ((["--m", "33"], r"m must be an integer in 1\.\.32 \(max_m of this array\), not 33"),
                          (["--k", "0"], r"k must be an integer in 1\.\.64 \(max_k of this array\), not 0"),
                          (["--n", "x"], r"n must be an integer in 1\.\.32 \(max_n of this array\), not 'x'"),
                          (["--seed", "-1"], r"seed must be an integer >= 0, not '-1'")):
        with pytest.raises(ConfigError, match=message):
            workload_from_args(parser.parse_args(argv), config)


def test_limits_table_drives_the_help():
    help_text = _parser().format_help()
    for name, (lo, hi) in LIMITS.items():
        flag = "--" + name.replace("_", "-")
        assert flag in help_text
        if name != "acc_bits":
            assert f"{lo}..{hi}" in help_text
