"""Complete parameterized designs, each with a frozen, validated config dataclass."""

from .mac_array import MacArray, MacArrayConfig, MacCore, SplitMacArray
from .snn_core import SnnCore, SnnCoreConfig

__all__ = ["MacArray", "MacArrayConfig", "MacCore", "SnnCore", "SnnCoreConfig", "SplitMacArray"]
