"""npuforge: parameterized NPU MAC arrays and spiking-neuron cores in Amaranth HDL.

The import package maps the repository's top-level folders: ``npuforge.hdl`` (building blocks),
``npuforge.generators`` (complete designs), ``npuforge.sim`` (golden models and simulation) and
``npuforge.boards`` (board targets, host link, builds).
"""

__version__ = "0.1.0"
