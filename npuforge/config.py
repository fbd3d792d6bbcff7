"""Design parameters from TOML files and command-line flags.

One design config (a frozen dataclass such as :class:`~npuforge.generators.MacArrayConfig`) can come
from three places, merged in this order, later ones winning:

1. the dataclass defaults;
2. a TOML file (``--config design.toml``): a table named after the design, keys as the field names::

       [mac-array]
       rows = 8
       cols = 8
       dataflow = "ws"
       acc_bits = "auto"      # TOML has no null: "auto" means None (derived width)

3. command-line flags, one per field (``--rows 8``, ``--in-unsigned``, ``--acc-bits 24``), generated
   from the dataclass fields by :func:`add_design_arguments` so that every sub-command that takes a
   design (``generate``, ``sim``, and the board flow's ``build``/``run``) offers the same flags.

Every problem raises :class:`ConfigError` (a :class:`ValueError`) whose message names the file, the
parameter, the value and the allowed range; the CLI prints it as one line and exits with status 2.
"""

import difflib
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .generators.mac_array import DATAFLOWS, LIMITS, LUT_MULTIPLIERS, MULTIPLIERS, MacArrayConfig
from .snn_config import SNN_CHOICES, SNN_HELP, SNN_LIMITS, SnnCoreParameters

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "DESIGNS",
    "DesignParameters",
    "add_design_arguments",
    "add_workload_arguments",
    "config_from_args",
    "default_workload_shape",
    "design_table",
    "load_config",
    "read_toml",
    "workload_from_args",
]


class ConfigError(ValueError):
    """A bad design parameter, configuration file or command-line value.

    The message is one line that names the parameter (and the file, if any), the value and what is
    allowed.
    """


@dataclass(frozen=True)
class DesignParameters:
    """How one design's config dataclass maps onto TOML keys and command-line flags.

    Members
    -------
    name : str
        The design's name: the CLI sub-command (``npuforge generate mac-array``) and the TOML table.
    config_cls : type
        The frozen config dataclass; it validates its own fields and has ``from_dict``.
    help : dict of str to str
        A description of each field for ``--help``.
    limits : dict of str to (int, int)
        Inclusive ranges of the integer fields, shown in ``--help``.
    choices : dict of str to tuple of str
        Allowed values of the string fields.
    auto : dict of str to str
        Fields whose ``None`` value is spelled ``"auto"`` in TOML and on the command line, with
        what ``auto`` means.
    ranges : dict of str to str
        Lower bounds that depend on other fields, in words, for ``--help``.
    """

    name: str
    config_cls: type
    help: dict
    limits: dict
    choices: dict
    auto: dict
    ranges: dict = field(default_factory=dict)


_MAC_ARRAY_HELP = {
    "rows": "PE rows; they tile M (output-stationary) or K (weight-stationary)",
    "cols": "PE columns; they tile N",
    "dataflow": "os = output-stationary (each PE owns an output), ws = weight-stationary (each PE "
                "holds a weight)",
    "in_bits": "activation (X) operand width in bits",
    "in_signed": "activations are signed (int) or unsigned (uint)",
    "w_bits": "weight (W) operand width in bits",
    "w_signed": "weights are signed (int) or unsigned (uint)",
    "acc_bits": "accumulator width in bits; 'auto' derives the width at which no sum of max_k "
                "products overflows, a smaller width saturates",
    "max_m": "largest M (rows of X and Y) the buffers hold",
    "max_k": "largest K (columns of X, rows of W) the buffers hold",
    "max_n": "largest N (columns of W and Y) the buffers hold",
    "multiplier": "PE multipliers: lut = partial products in logic cells, infer = a plain multiply "
                  "the synthesis tool maps (a whole SB_MAC16 on iCE40 with -dsp), dsp = iCE40 "
                  "SB_MAC16 blocks (two int8 PEs per block), mixed = dsp_blocks blocks then logic",
    "dsp_blocks": "SB_MAC16 blocks to use with --multiplier mixed",
    "lut_multiplier": "how PEs in logic multiply: tree = partial products summed per PE, carry = "
                      "carry-chain rows with operand delay lines shared by PE rows and columns "
                      "(output-stationary, about half the cells)",
    "mul_latency": "register stages in each PE multiplier (up to 4 with --lut-multiplier carry)",
    "requant_radix": "multiplier bits the requantizer consumes per cycle (fewer cells, more cycles "
                     "per output); 0 = bit-serial, the smallest",
    "out_signed": "requantized outputs are int8 (signed) or uint8 (unsigned)",
    "operand_gating": "PE operand registers hold while an operand is zero (fewer toggles on ReLU "
                      "activations; one more pipeline stage)",
}

#: The designs whose parameters the CLI and TOML files know, by name. Later designs add an entry.
DESIGNS = {
    "mac-array": DesignParameters(
        name="mac-array",
        config_cls=MacArrayConfig,
        help=_MAC_ARRAY_HELP,
        limits=LIMITS,
        choices={"dataflow": DATAFLOWS, "multiplier": MULTIPLIERS,
                 "lut_multiplier": LUT_MULTIPLIERS},
        auto={"acc_bits": "derived from max_k and the operand types",
              "dsp_blocks": "as many as the multiplier allocation needs"},
        ranges={"acc_bits": "in_bits+w_bits"},
    ),
    # The spiking core's nested config, flattened: neuron parameters sit beside the core's.
    "snn-core": DesignParameters(
        name="snn-core",
        config_cls=SnnCoreParameters,
        help=SNN_HELP,
        limits=SNN_LIMITS,
        choices=SNN_CHOICES,
        auto={"recurrent_depth": "as many as there are neurons"},
    ),
}


def _design(design):
    if isinstance(design, DesignParameters):
        return design
    try:
        return DESIGNS[design]
    except KeyError:
        raise ConfigError(f"design must be one of {', '.join(map(repr, DESIGNS))}, not {design!r}") from None


def _is_bool_field(f):
    return f.type in (bool, "bool")


def _flag(name):
    return "--" + name.replace("_", "-")


def _negative_flag(name):
    # `in_signed` reads naturally as --in-signed / --in-unsigned; other switches get --no-<name>.
    if name.endswith("_signed"):
        return _flag(name[: -len("_signed")] + "_unsigned")
    return "--no-" + name.replace("_", "-")


def _dest(name):
    # A prefix keeps design fields apart from a sub-command's own options (--name, --m, ...).
    return f"design_{name}"


# -- TOML ------------------------------------------------------------------------------------------

def read_toml(path):
    """Parse a TOML file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        If the file cannot be read or is not valid TOML (the message names the file).
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def design_table(data, design="mac-array", *, source="config", required=False):
    """The parameters of ``design`` in parsed TOML ``data``, checked for unknown keys.

    Values are returned as written (``"auto"`` becomes ``None``); the config dataclass checks
    their types and ranges when it is built.

    Parameters
    ----------
    data : dict
        Parsed TOML.
    design : str
        Table name (``"mac-array"``).
    source : str
        Where ``data`` came from, for messages (usually the file name).
    required : bool
        Whether a missing table is an error (otherwise it gives no parameters).

    Returns
    -------
    dict
        Field name to value.

    Raises
    ------
    ConfigError
        If the table is missing (and ``required``), is not a table, or holds a key that is not a
        parameter of the design.
    """
    spec = _design(design)
    if spec.name not in data:
        if required:
            raise ConfigError(f"{source}: no [{spec.name}] table; put the {spec.name} parameters "
                              f"under a [{spec.name}] line")
        return {}
    table = data[spec.name]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{spec.name}] must be a table of parameters, not {table!r}")
    known = [f.name for f in fields(spec.config_cls)]
    values = {}
    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown {spec.name} parameter {key!r}{hint}; "
                              f"known: {', '.join(known)}")
        if key in spec.auto and value == "auto":
            value = None
        values[key] = value
    return values


def load_config(path, design="mac-array", **overrides):
    """Build a design config from a TOML file, with keyword overrides.

    Parameters
    ----------
    path : str or os.PathLike
        TOML file with a ``[mac-array]`` (or other design) table.
    design : str
        Which design's table to read.
    **overrides
        Field values that replace the file's.

    Returns
    -------
    MacArrayConfig (or the design's config class)

    Raises
    ------
    ConfigError
        Naming the file, the parameter, the value and the allowed range.
    """
    spec = _design(design)
    values = design_table(read_toml(path), spec, source=str(path), required=True)
    values.update(overrides)
    try:
        return spec.config_cls.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


# -- command-line flags ------------------------------------------------------------------------

def _field_help(spec, f):
    parts = [spec.help.get(f.name, f.name.replace("_", " "))]
    default = f.default if f.default is not MISSING else None
    if f.name in spec.limits:
        lo, hi = spec.limits[f.name]
        parts.append(f"range {spec.ranges.get(f.name, lo)}..{hi}")
    if default is None and f.name in spec.auto:
        parts.append("default: auto")
    elif _is_bool_field(f):
        parts.append(f"default: {_flag(f.name) if default else _negative_flag(f.name)}")
    else:
        parts.append(f"default: {default}")
    # argparse treats % as a format character in help strings.
    return "; ".join(parts).replace("%", "%%")


def add_design_arguments(parser, design="mac-array", *, config_file=True):
    """Add one command-line flag per field of a design's config dataclass, and ``--config``.

    Integer fields take a value (``--rows 8``), string fields one of their choices
    (``--dataflow ws``), switches a pair of flags (``--in-signed`` / ``--in-unsigned``), and fields
    that may be ``None`` also accept ``auto`` (``--acc-bits auto``). Flags default to "not given",
    so that :func:`config_from_args` can tell a flag from a value in the config file.

    Parameters
    ----------
    parser : argparse.ArgumentParser
    design : str
        ``"mac-array"``.
    config_file : bool
        Also add ``--config FILE``.

    Returns
    -------
    argparse._ArgumentGroup
        The group holding the flags.
    """
    spec = _design(design)
    group = parser.add_argument_group(
        f"{spec.name} parameters",
        f"Flags override the [{spec.name}] table of --config; both default to the values shown.")
    if config_file:
        group.add_argument("--config", metavar="FILE", default=None,
                           help=f"TOML file with a [{spec.name}] table whose keys are the parameter "
                                f"names below with underscores (rows, in_bits, acc_bits = \"auto\", ...)")
    for f in fields(spec.config_cls):
        help_text = _field_help(spec, f)
        if _is_bool_field(f):
            flags = group.add_mutually_exclusive_group()
            flags.add_argument(_flag(f.name), dest=_dest(f.name), action="store_const", const=True,
                               default=None, help=help_text)
            flags.add_argument(_negative_flag(f.name), dest=_dest(f.name), action="store_const",
                               const=False, default=None, help=f"the opposite of {_flag(f.name)}")
        elif f.name in spec.choices:
            group.add_argument(_flag(f.name), dest=_dest(f.name), default=None,
                               metavar="{" + ",".join(spec.choices[f.name]) + "}", help=help_text)
        else:
            metavar = "BITS" if f.name.endswith("_bits") else "N"
            if f.name in spec.auto:
                metavar += "|auto"
            group.add_argument(_flag(f.name), dest=_dest(f.name), default=None, metavar=metavar,
                               help=help_text)
    return group


def _parse_flag_value(spec, f, text):
    if f.name in spec.auto and text == "auto":
        return None
    if f.name in spec.choices:
        return text
    try:
        return int(text, 10)
    except ValueError:
        if f.name in spec.limits:
            lo, hi = spec.limits[f.name]
            raise ConfigError(f"{f.name} must be an integer in {lo}..{hi}, not {text!r}") from None
        raise ConfigError(f"{f.name} must be an integer, not {text!r}") from None


def config_from_args(args, design="mac-array"):
    """Build the design config from parsed arguments (see :func:`add_design_arguments`).

    Parameters
    ----------
    args : argparse.Namespace
    design : str

    Returns
    -------
    MacArrayConfig (or the design's config class)

    Raises
    ------
    ConfigError
        For a bad flag value, a bad config file or an invalid combination; the message names the
        parameter, the value and the allowed range.
    """
    spec = _design(design)
    values = {}
    path = getattr(args, "config", None)
    if path is not None:
        values.update(design_table(read_toml(path), spec, source=str(path), required=True))
    from_file = set(values)
    for f in fields(spec.config_cls):
        given = getattr(args, _dest(f.name), None)
        if given is None:
            continue
        from_file.discard(f.name)
        values[f.name] = given if _is_bool_field(f) else _parse_flag_value(spec, f, given)
    try:
        return spec.config_cls.from_dict(values)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        # Messages start with the parameter's name: name the file too when the value came from it.
        if message.split(" ", 1)[0] in from_file:
            message = f"{path}: {message}"
        raise ConfigError(message) from None


# -- workload (problem size, seed) -------------------------------------------------------------

def default_workload_shape(config):
    """A small ``(M, K, N)`` that fits ``config`` and tiles over both array dimensions.

    Twice the array plus one along each tiled axis: every tile loop runs more than once and the
    last tile is partial.
    """
    return (min(config.max_m, 2 * config.rows + 1),
            min(config.max_k, 2 * config.rows + 1),
            min(config.max_n, 2 * config.cols + 1))


def add_workload_arguments(parser, *, what="the GEMM"):
    """Add ``--m``, ``--k``, ``--n``, ``--seed`` and ``--requant`` (a random GEMM's size and data).

    Returns
    -------
    argparse._ArgumentGroup
    """
    group = parser.add_argument_group(
        "workload", f"Size and random data of {what}:\nX is M x K, W is K x N, both uniformly random "
                    "over the operand types, bias uniform in -2**15..2**15-1.")
    group.add_argument("--m", metavar="M", default=None,
                       help="rows of X and Y, 1..max_m (default: min(max_m, 2*rows+1))")
    group.add_argument("--k", metavar="K", default=None,
                       help="columns of X and rows of W, 1..max_k (default: min(max_k, 2*rows+1))")
    group.add_argument("--n", metavar="N", default=None,
                       help="columns of W and Y, 1..max_n (default: min(max_n, 2*cols+1))")
    group.add_argument("--seed", metavar="S", default=None,
                       help="random seed, an integer >= 0 (default: 1)")
    group.add_argument("--requant", action="store_true",
                       help="requantize to int8/uint8 with random per-channel parameters "
                            "(default: raw int32 outputs, acc + bias)")
    return group


def workload_from_args(args, config):
    """``(m, k, n, seed, requant)`` from parsed :func:`add_workload_arguments` flags.

    Raises
    ------
    ConfigError
        If a size is not an integer or does not fit the config's buffers, or the seed is negative.
    """
    dm, dk, dn = default_workload_shape(config)
    sizes = []
    for name, default, limit in (("m", dm, config.max_m), ("k", dk, config.max_k),
                                 ("n", dn, config.max_n)):
        text = getattr(args, name, None)
        if text is None:
            sizes.append(default)
            continue
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigError(f"{name} must be an integer in 1..{limit} (max_{name} of this "
                              f"array), not {text!r}") from None
        if not 1 <= value <= limit:
            raise ConfigError(f"{name} must be an integer in 1..{limit} (max_{name} of this "
                              f"array), not {value}")
        sizes.append(value)
    seed_text = getattr(args, "seed", None)
    seed = 1
    if seed_text is not None:
        try:
            seed = int(seed_text, 10)
        except ValueError:
            seed = -1
        if seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, not {seed_text!r}")
    return sizes[0], sizes[1], sizes[2], seed, bool(getattr(args, "requant", False))
