"""The digits network on a generated NPU through the public API (no CLI).

    python examples/digits_on_npu.py [--limit N] [--backend amaranth|verilator]

Trains a 64-32-10 MLP, quantizes it to int8, runs the test split through a virtual board (the
board shell's gateware in simulation, over the UART protocol) and checks every activation against
the NumPy int8 reference.
"""

import argparse
import time

import numpy as np

from npuforge.boards.host import VirtualBoard
from npuforge.generators import MacArrayConfig
from npuforge.models import load_digits_split, quantize_mlp, train_digits_mlp

parser = argparse.ArgumentParser()
parser.add_argument("--limit", type=int, default=40, help="test samples to run (default 40)")
parser.add_argument("--backend", default="amaranth", choices=["amaranth", "verilator"])
args = parser.parse_args()

split = load_digits_split(seed=0)
float_model = train_digits_mlp(seed=0, split=split)
qmodel = quantize_mlp(float_model, split.x_train)           # int8 weights, int32 bias, Q31 scales
x_q = qmodel.quantize_input(split.x_test[:args.limit])
labels = split.y_test[:args.limit]
reference = qmodel.forward_int8(x_q)                         # NumPy int8 reference, every layer

config = MacArrayConfig(rows=2, cols=2, max_m=32, max_k=64, max_n=32)
t0 = time.monotonic()
with VirtualBoard(config, backend=args.backend) as board:
    print("device:", board.info()["design"], board.info()["hash"])
    h = x_q
    for i, layer in enumerate(qmodel.layers):
        h = board.gemm(h, layer.w, layer.bias, layer.requant)   # Y = requant(X @ W + b)
        assert np.array_equal(h, reference[i]), f"layer {i} differs from the int8 reference"
    cycles = board.total_cycles
seconds = time.monotonic() - t0

print(f"float accuracy     {np.mean(float_model.predict(split.x_test[:args.limit]) == labels):.3f}")
print(f"hardware accuracy  {np.mean(np.argmax(h, axis=1) == labels):.3f} (bit-exact with int8 reference)")
print(f"MACs per inference {qmodel.macs_per_inference}")
print(f"device cycles      {cycles / len(labels):.0f} per inference (UART waits included)")
print(f"simulated in       {seconds:.1f} s")
