"""NumPy golden models. Nothing here imports Amaranth: these are the independent reference."""

from .gemm import RequantParams, bias_add, gemm, mac_array_reference, required_acc_bits
from .requant import (
    INT32_MAX,
    INT32_MIN,
    quantize_multiplier,
    quantize_multipliers,
    requantize,
    rounding_divide_by_pot,
    saturate,
    srdhm,
)
from .snn import SnnModel, neuron_params
