"""``manifest.json``: what a generated design is, how to drive it, and a content hash.

Every directory of generated artefacts holds a manifest: the generator and its version, the config,
the ports (with their Verilog names), derived figures, the tool versions and a content hash. The
board flow and the host's INFO command identify a design by the hash (its first 64 bits are small
enough to sit in a bitstream: :func:`hash_prefix64`).

The hash covers exactly the config and the generated Verilog (see :func:`content_hash`); nothing
time- or machine-dependent goes into either, so regenerating the same config with the same tool
versions gives the same hash.
"""

import enum
import hashlib
import importlib.metadata
import json
import platform
import re
from pathlib import Path

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from . import __version__
from .generators.mac_array import LoadTarget, MacArrayConfig

__all__ = [
    "MANIFEST_SCHEMA",
    "build_manifest",
    "content_hash",
    "hash_prefix64",
    "port_list",
    "read_manifest",
    "tool_versions",
    "verilog_ports",
    "write_manifest",
]

#: Identifies the manifest format; bumped when a field changes meaning.
MANIFEST_SCHEMA = "npuforge-manifest/1"

# Domain separation: a hash of this format can never equal a hash of some other byte string layout.
_HASH_PREFIX = b"npuforge-content-hash/1\n"

_PORT_DECL = re.compile(
    r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*;",
    re.MULTILINE)


def _config_dict(config):
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a design config (with to_dict) or a dict, not {config!r}")


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(verilog_text, config):
    """SHA-256 over the generated Verilog and the config that produced it.

    The hashed bytes are ``b"npuforge-content-hash/1\\n"``, the config as canonical JSON (sorted
    keys, no spaces, ASCII), a newline, then the Verilog text in UTF-8.

    Parameters
    ----------
    verilog_text : str
        The Verilog as written to ``<name>.v``.
    config : MacArrayConfig or dict
        The design config (or its ``to_dict()``).

    Returns
    -------
    str
        64 lower-case hex digits.

    Raises
    ------
    TypeError
        If ``verilog_text`` is not a string or ``config`` is neither a config nor a dict.
    """
    if not isinstance(verilog_text, str):
        raise TypeError(f"verilog_text must be a string, not {type(verilog_text).__name__}")
    digest = hashlib.sha256()
    digest.update(_HASH_PREFIX)
    digest.update(_canonical_json(_config_dict(config)).encode("ascii"))
    digest.update(b"\n")
    digest.update(verilog_text.encode("utf-8"))
    return digest.hexdigest()


def hash_prefix64(digest):
    """The first 64 bits of a :func:`content_hash` as an integer (big-endian: the first 16 hex digits).

    Raises
    ------
    ValueError
        If ``digest`` is not a string of at least 16 hex digits.
    """
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-fA-F]{16,}", digest):
        raise ValueError(f"digest must be a hex string of at least 16 digits, not {digest!r}")
    return int(digest[:16], 16)


def _layout_fields(layout):
    """Field offsets, widths and types of a :class:`data.Layout`, for the manifest."""
    result = {}
    for name, fld in layout:
        shape = fld.shape
        entry = {"offset": fld.offset, "width": fld.width, "signed": Shape.cast(shape).signed}
        if isinstance(shape, type) and issubclass(shape, enum.Enum):
            entry["enum"] = {member.name: member.value for member in shape}
        elif isinstance(shape, data.Layout):
            entry["layout"] = _layout_fields(shape)
        result[str(name)] = entry
    return result


def port_list(component):
    """The ports of a component's signature, with their flattened Verilog names.

    Parameters
    ----------
    component : amaranth.lib.wiring.Component

    Returns
    -------
    list of dict
        One entry per port: ``name`` (as in the Verilog: the signature path joined with ``__``),
        ``path`` (the signature path), ``direction`` (``"in"``/``"out"``), ``width``, ``signed``, and
        ``layout`` (field offsets and widths) for structured payloads.

    Raises
    ------
    TypeError
        If ``component`` has no :class:`wiring.Signature`.
    """
    signature = getattr(component, "signature", None)
    if not isinstance(signature, wiring.Signature):
        raise TypeError(f"component must have a wiring.Signature, not {component!r}")
    ports = []
    for path, member, _value in signature.flatten(component):
        shape = Shape.cast(member.shape)
        entry = {
            "name": "__".join(map(str, path)),
            "path": [str(p) for p in path],
            "direction": "in" if member.flow == wiring.In else "out",
            "width": shape.width,
            "signed": shape.signed,
        }
        if isinstance(member.shape, data.Layout):
            entry["layout"] = _layout_fields(member.shape)
        ports.append(entry)
    return ports


def verilog_ports(verilog_text, module):
    """Ports of ``module`` as declared in Verilog text written by Yosys.

    Returns
    -------
    dict
        Port name to ``(direction, width)``.

    Raises
    ------
    ValueError
        If the module is not in the text.
    """
    match = re.search(r"^module\s+" + re.escape(module) + r"\s*\(", verilog_text, re.MULTILINE)
    if match is None:
        raise ValueError(f"module {module!r} is not in the Verilog text")
    end = verilog_text.index("endmodule", match.end())
    body = verilog_text[match.end():end]
    ports = {}
    for direction, msb, lsb, name in _PORT_DECL.findall(body):
        width = int(msb) - int(lsb) + 1 if msb else 1
        ports[name] = (direction, width)
    return ports


def _all_ports(component, verilog_text, name):
    ports = port_list(component)
    declared = verilog_ports(verilog_text, name)
    known = {p["name"] for p in ports}
    for port in ports:
        if port["name"] not in declared:
            raise ValueError(f"port {port['name']!r} of the signature is missing from module {name!r}")
    # Ports outside the signature are the clock and reset of the `sync` domain that Amaranth adds.
    roles = {"clk": ("clock", "rising edge"), "rst": ("reset", "synchronous, active high")}
    extra = []
    for pname, (direction, width) in declared.items():
        if pname in known:
            continue
        entry = {"name": pname, "path": None, "direction": "in" if direction == "input" else "out",
                 "width": width, "signed": False}
        if pname in roles:
            entry["role"], entry["note"] = roles[pname]
        extra.append(entry)
    return extra + ports


def tool_versions():
    """Versions of the tools that produce the artefacts (Python, npuforge, Amaranth, Yosys)."""
    from .verilog import yosys_info
    return {
        "python": platform.python_version(),
        "npuforge": __version__,
        "amaranth": importlib.metadata.version("amaranth"),
        "yosys": yosys_info(),
    }


_OUTPUT_ORDER = {
    "os": ("tiles of rows x cols outputs: for m0 in 0, rows, 2*rows, ... < M; for n0 in 0, cols, ... < N; "
           "rows m0 .. min(m0+rows, M)-1 in order, each with columns n0 .. min(n0+cols, N)-1"),
    "ws": ("column strips of cols outputs: for n0 in 0, cols, 2*cols, ... < N; for m in 0 .. M-1; "
           "columns n0 .. min(n0+cols, N)-1"),
}


def _mac_array_figures(config):
    buffer_bits = dict(config.memory_bits)
    buffer_bits["total"] = sum(buffer_bits.values())
    return {
        "macs_per_cycle": config.macs_per_cycle,
        "product_bits": config.product_bits,
        "accumulator": {
            "bits": config.accumulator_bits,
            "natural_bits": config.natural_acc_bits,
            "saturating": config.saturating,
            "k_group": config.k_group,
        },
        "buffer_bits": buffer_bits,
        "buffer_words": {"x": config.x_words, "w": config.w_words, "acc": config.acc_words,
                         "bias": config.max_n, "mult": config.max_n, "shift": config.max_n},
        "estimated_resources": config.estimate_resources(),
        "load_order": ("words on `load` (target, data): W[k, n] row-major, X[m, k] row-major, bias[n], "
                       "then mult[n] and shift[n] for requantization; set size_m/k/n and pulse clear "
                       "first"),
        "load_targets": {member.name: member.value for member in LoadTarget},
        "output_order": {"dataflow": config.dataflow, "rule": _OUTPUT_ORDER[config.dataflow]},
        "limits": {"max_m": config.max_m, "max_k": config.max_k, "max_n": config.max_n},
    }


# Derived figures per config class; a later generator adds its own function here.
_FIGURES = {MacArrayConfig: ("mac-array", _mac_array_figures)}


def build_manifest(config, verilog_text, component, name, *, files=None, testbench=None, tools=None):
    """The manifest of a generated design.

    Parameters
    ----------
    config : MacArrayConfig
    verilog_text : str
        The generated Verilog (hashed).
    component : amaranth.lib.wiring.Component
        The component the Verilog was generated from (for the ports).
    name : str
        The top module's name.
    files : dict of str to (str, str), optional
        Artefact kind (``"verilog"``, ``"rtlil"``, ``"testbench"``) to ``(file name, text)``; the
        manifest lists each file with the SHA-256 of its text.
    testbench : dict, optional
        How the testbench was made (sizes, seed, requantization, output count).
    tools : dict, optional
        Tool versions; :func:`tool_versions` when omitted.

    Returns
    -------
    dict
        JSON-ready: ``schema``, ``generator``, ``name``, ``config``, ``ports``, ``derived``,
        ``tools``, ``content_hash``, ``hash_prefix64``, ``files`` and ``testbench``.

    Raises
    ------
    TypeError
        If ``config`` is not a known design config.
    ValueError
        If a signature port is missing from the Verilog module.
    """
    kind = _FIGURES.get(type(config))
    if kind is None:
        raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
    generator, figures = kind
    digest = content_hash(verilog_text, config)
    manifest = {
        "schema": MANIFEST_SCHEMA,
        "generator": {
            "name": generator,
            "class": f"{type(component).__module__}.{type(component).__qualname__}",
            "version": __version__,
        },
        "name": name,
        "config": config.to_dict(),
        "ports": _all_ports(component, verilog_text, name),
        "derived": figures(config),
        "tools": tools if tools is not None else tool_versions(),
        "content_hash": {
            "algorithm": "sha256",
            "covers": "config (canonical JSON) and the Verilog text",
            "hex": digest,
            "prefix64": f"0x{hash_prefix64(digest):016x}",
        },
        "files": {kind: {"path": fname, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
                  for kind, (fname, text) in (files or {}).items()},
    }
    if testbench is not None:
        manifest["testbench"] = dict(testbench)
    return manifest


def write_manifest(manifest, path):
    """Write ``manifest`` to ``path`` as indented JSON (key order kept, newline at the end)."""
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(path):
    """Read a ``manifest.json``.

    Raises
    ------
    ValueError
        If the file is not a manifest of this schema.
    """
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"{path} is not an npuforge manifest ({MANIFEST_SCHEMA})")
    return manifest
