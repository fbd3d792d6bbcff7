"""Golden models, simulation harnesses, waveforms and activity estimates."""

from .gemm import GemmResult, simulate_gemm
from .snn import SnnSimResult, simulate_snn, simulate_snn_batch, simulate_snn_events

__all__ = ["GemmResult", "SnnSimResult", "simulate_gemm", "simulate_snn", "simulate_snn_batch",
           "simulate_snn_events"]
