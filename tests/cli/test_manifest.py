"""manifest.json content and the content hash (npuforge.manifest)."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from npuforge.generators import MacArrayConfig
from npuforge.generators.mac_array import LoadLayout, LoadTarget
from npuforge.manifest import (
    MANIFEST_SCHEMA,
    build_manifest,
    content_hash,
    hash_prefix64,
    port_list,
    read_manifest,
    verilog_ports,
    write_manifest,
)
from npuforge.verilog import generate

CONFIG = MacArrayConfig(rows=2, cols=3, dataflow="ws", in_bits=4, w_signed=False, acc_bits=14,
                        max_m=6, max_k=8, max_n=7)


@pytest.fixture(scope="module")
def design():
    verilog_text, rtlil_text, component = generate(CONFIG, "npu_top")
    return verilog_text, rtlil_text, component


@pytest.fixture(scope="module")
def manifest(design):
    verilog_text, rtlil_text, component = design
    files = {"verilog": ("npu_top.v", verilog_text), "rtlil": ("npu_top.il", rtlil_text)}
    return build_manifest(CONFIG, verilog_text, component, "npu_top", files=files)


def test_hash_follows_its_definition():
    config = MacArrayConfig(rows=3)
    text = "module m; endmodule\n"
    canonical = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(b"npuforge-content-hash/1\n" + canonical.encode() + b"\n" + text.encode())
    assert content_hash(text, config) == expected.hexdigest()
    assert content_hash(text, config.to_dict()) == expected.hexdigest()


def test_hash_changes_with_the_verilog_and_with_the_config():
    config = MacArrayConfig()
    base = content_hash("module m; endmodule\n", config)
    assert content_hash("module m;  endmodule\n", config) != base
    assert content_hash("module m; endmodule\n", MacArrayConfig(rows=5)) != base
    with pytest.raises(TypeError, match="verilog_text must be a string, not bytes"):
        content_hash(b"module", config)
    with pytest.raises(TypeError, match="config must be a design config"):
        content_hash("module", 42)


def test_hash_prefix64():
    digest = content_hash("x", MacArrayConfig())
    assert hash_prefix64(digest) == int(digest[:16], 16)
    assert hash_prefix64("0123456789abcdef" + "0" * 48) == 0x0123456789ABCDEF
    with pytest.raises(ValueError, match="digest must be a hex string of at least 16 digits, not 'xyz'"):
        hash_prefix64("xyz")


_HASH_SCRIPT = """
from npuforge.generators import MacArrayConfig
from npuforge.manifest import content_hash
from npuforge.verilog import generate
config = MacArrayConfig(rows=2, cols=3, dataflow="ws", in_bits=4, w_signed=False, acc_bits=14,
                        max_m=6, max_k=8, max_n=7)
print(content_hash(generate(config, "npu_top")[0], config))
"""


def test_hash_is_stable_across_processes(design, tmp_path):
    # Another process with another string-hash seed must generate byte-identical Verilog.
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    assert out.stdout.strip() == content_hash(design[0], CONFIG)


def test_ports_match_the_verilog_module(design, manifest):
    verilog_text, _, component = design
    declared = verilog_ports(verilog_text, "npu_top")
    ports = {p["name"]: p for p in manifest["ports"]}
    assert set(ports) == set(declared)
    for name, (direction, width) in declared.items():
        assert ports[name]["direction"] == {"input": "in", "output": "out"}[direction]
        assert ports[name]["width"] == width
    assert ports["clk"]["role"] == "clock" and ports["rst"]["role"] == "reset"
    assert [p["name"] for p in port_list(component)] == [p["name"] for p in manifest["ports"][2:]]


def test_port_details(manifest):
    ports = {p["name"]: p for p in manifest["ports"]}
    assert ports["load__payload"]["path"] == ["load", "payload"]
    assert ports["load__payload"]["width"] == LoadLayout.size
    layout = ports["load__payload"]["layout"]
    assert layout["target"]["enum"] == {t.name: t.value for t in LoadTarget}
    assert (layout["data"]["offset"], layout["data"]["width"], layout["data"]["signed"]) == (3, 32, True)
    assert (ports["y__payload"]["direction"], ports["y__payload"]["signed"]) == ("out", True)
    assert (ports["zero_point"]["width"], ports["zero_point"]["signed"]) == (16, True)
    assert (ports["size_m"]["width"], ports["size_m"]["signed"]) == (16, False)
    assert ports["load__ready"]["direction"] == "out" and ports["y__ready"]["direction"] == "in"


def test_manifest_content(design, manifest):
    verilog_text, rtlil_text, _ = design
    assert manifest["schema"] == MANIFEST_SCHEMA
    assert manifest["generator"]["name"] == "mac-array"
    assert manifest["generator"]["class"] == "npuforge.generators.mac_array.MacArray"
    assert MacArrayConfig.from_dict(manifest["config"]) == CONFIG
    derived = manifest["derived"]
    assert derived["macs_per_cycle"] == 6
    # int4 x uint8 products lie in -2040..1785; a sum of max_k = 8 of them needs 15 bits, so the
    # explicit 14-bit accumulator saturates.
    assert derived["accumulator"] == {"bits": 14, "natural_bits": CONFIG.natural_acc_bits,
                                      "saturating": True, "k_group": 2}
    assert CONFIG.natural_acc_bits == 15
    bits = derived["buffer_bits"]
    assert bits["total"] == sum(v for k, v in bits.items() if k != "total")
    assert bits["x"] == CONFIG.x_words * 2 * 4 and bits["w"] == CONFIG.w_words * 3 * 8
    assert derived["estimated_resources"] == CONFIG.estimate_resources()
    assert derived["output_order"]["dataflow"] == "ws"
    tools = manifest["tools"]
    assert tools["amaranth"] == importlib.metadata.version("amaranth")
    assert tools["yosys"]["version"]
    digest = content_hash(verilog_text, CONFIG)
    assert manifest["content_hash"]["hex"] == digest
    assert manifest["content_hash"]["prefix64"] == f"0x{digest[:16]}"
    assert manifest["files"]["verilog"] == {"path": "npu_top.v",
                                            "sha256": hashlib.sha256(verilog_text.encode()).hexdigest()}
    assert manifest["files"]["rtlil"]["sha256"] == hashlib.sha256(rtlil_text.encode()).hexdigest()


def test_manifest_round_trips_through_json(manifest, tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest
    text = path.read_text()
    # Nothing time-dependent: the same manifest serializes to the same bytes.
    write_manifest(manifest, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == text
    path.write_text('{"schema": "other"}')
    with pytest.raises(ValueError, match="is not an npuforge manifest"):
        read_manifest(path)


def test_manifest_rejects_unknown_configs(design):
    verilog_text, _, component = design
    with pytest.raises(TypeError, match="config must be a MacArrayConfig, not 3"):
        build_manifest(3, verilog_text, component, "npu_top")
    with pytest.raises(ValueError, match="module 'other' is not in the Verilog text"):
        build_manifest(CONFIG, verilog_text, component, "other")
