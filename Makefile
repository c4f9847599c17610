# daris_ros developer entry points. Each target does its own setup (venv + colcon build) first.
#   make demo   - self-contained demo: synthetic cameras -> scheduler node -> per-task summary table
#   make test   - ruff + unit, property, ROS end-to-end tests (what CI runs via .ci/run)
#   make build  - colcon build into install/
SHELL := /bin/bash
VENV ?= .venv
export VENV

.PHONY: venv build test lint demo sim clean

venv:
	scripts/setup_venv.sh

build: venv
	scripts/build.sh

lint: venv
	$(VENV)/bin/ruff check .

test: build lint
	scripts/run_in_install.sh pytest -q

demo: build
	scripts/run_in_install.sh install/daris_ros/lib/daris_ros/daris-demo $(DEMO_ARGS)

sim: venv
	$(VENV)/bin/python -m daris_ros.sim.cli config/sim/resnet18_150.yaml

clean:
	rm -rf build install log
