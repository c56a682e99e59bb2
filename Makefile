# cellos: `make run` runs the line, `make test` runs every test, `make bench` every benchmark.
# colcon runs as `python -m colcon` with the venv's python, so the node entry points use it (with a
# ROS 2 distro the venv holds the libraries that have no rosdep key: tools/setup.sh)
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c
ENV := . tools/env.sh
DURATION ?= 20
CELLS ?= 4
# the whole line (20 nodes in 11 Python processes) at 20 Hz fits 2 cores; the timing layer alone
# runs at the nodes' default 50 Hz: make run PERIOD_MS=20 RUN_ARGS=--timing-only
PERIOD_MS ?= 50
ROS_DOMAIN_ID ?= 42
export ROS_DOMAIN_ID
# property tests keep their example database in build/, not in the source tree
export HYPOTHESIS_STORAGE_DIRECTORY := $(CURDIR)/build/.hypothesis

.PHONY: setup build run test test-unit test-system bench clean
setup:
	@tools/setup.sh

build: setup
	@$(ENV)
	flock .build.lock python -m colcon --log-base log build --symlink-install --base-paths msg ros2_ws/src --event-handlers console_direct- summary- 2>&1 | grep -vE "^(Starting|Finished) >>>|^$$" || { echo "build failed: see log/latest_build"; exit 1; }

run: build
	@$(ENV)
	python -m cellos_bringup.runner --cells $(CELLS) --duration $(DURATION) --period-ms $(PERIOD_MS) $(RUN_ARGS)

test: build
	@$(ENV)
	python -m colcon --log-base log test --base-paths msg ros2_ws/src --packages-skip cellos_interfaces --return-code-on-test-failure --event-handlers console_direct+
	python -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

bench: build
	@$(ENV)
	python -m pytest -q -s -p no:cacheprovider -o python_files='bench_*.py' tests/bench $(PYTEST_ARGS) 2>&1 | tee log/bench.log | grep -E '^BENCH|passed|failed|error' 

clean:
	rm -rf build install log
