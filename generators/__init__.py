"""Complete parameterized designs, each with a frozen, validated config dataclass."""

from .mac_array import MacArray, MacArrayConfig

__all__ = ["MacArray", "MacArrayConfig"]
