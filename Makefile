# cellos: `make run` runs the line, `make test` runs every test, `make bench` every benchmark.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eo pipefail -c
ENV := . tools/env.sh
# make run's defaults are the runner's (line_runner --help). The line period is period_ms of
# config/line.yaml, as for `ros2 launch cellos_bringup line.launch.py`; PERIOD_MS=.. overrides it.
DURATION ?= 20
CELLS ?= 4
PERIOD_MS ?=
ROS_DOMAIN_ID ?= 42
export ROS_DOMAIN_ID
# property tests keep their example database in build/, not in the source tree
export HYPOTHESIS_STORAGE_DIRECTORY := $(CURDIR)/build/.hypothesis
PACKAGES := $(words $(wildcard msg/package.xml ros2_ws/src/*/package.xml))

.PHONY: setup build run test test-unit test-system bench clean
setup:
	@tools/setup.sh

# colcon's own lines, numbered: the first build of the messages (cellos_interfaces) takes 1-2 min
build: setup
	@$(ENV)
	echo "[build] colcon build of $(PACKAGES) packages into install/ (log: log/latest_build; the first build of the messages, cellos_interfaces, takes a minute or so)"
	flock .build.lock python -m colcon --log-base log build --symlink-install --base-paths msg ros2_ws/src \
	  --event-handlers console_direct- summary- 2>&1 | awk -v total=$(PACKAGES) \
	  '/^Starting >>> /{printf "[build] %d/%d %s ...\n", ++n, total, $$3; fflush(); next} \
	   /^Finished <<< /{printf "[build] %s done %s\n", $$3, $$4; fflush(); next} /^$$/{next} {print; fflush()}' \
	  || { echo "build failed: see log/latest_build"; exit 1; }

run: build
	@$(ENV)
	python -m cellos_bringup.runner --cells $(CELLS) --duration $(DURATION) $(if $(PERIOD_MS),--period-ms $(PERIOD_MS)) $(RUN_ARGS)

# unit tests of every package (colcon test: junit XML in build/<package>/pytest.xml), system tests
# over real DDS (junit XML in build/tests/pytest.xml)
UNIT_TESTS := python -m colcon --log-base log test --base-paths msg ros2_ws/src --packages-skip cellos_interfaces \
  --return-code-on-test-failure --event-handlers console_direct+ --executor sequential
SYSTEM_TESTS := python -m pytest -q -p no:cacheprovider tests --junit-xml=build/tests/pytest.xml $(PYTEST_ARGS)

test-unit: build
	@$(ENV)
	rm -f build/*/pytest.xml
	$(UNIT_TESTS)

test-system: build
	@$(ENV)
	rm -f build/tests/pytest.xml
	$(SYSTEM_TESTS)

# both, then one summary: the counts of each part and every skip with its reason
test: build
	@$(ENV)
	rm -f build/*/pytest.xml build/tests/pytest.xml
	rc=0
	$(UNIT_TESTS) || rc=1
	$(SYSTEM_TESTS) || rc=1
	python tools/test_summary.py build
	exit $$rc

# BENCH lines as they come, then each figure against its target (TARGETS in tests/bench/targets.py)
bench: build
	@$(ENV)
	rc=0
	python -m pytest -q -s -p no:cacheprovider -o python_files='bench_*.py' tests/bench $(PYTEST_ARGS) 2>&1 \
	  | tee log/bench.log | grep -E '^BENCH|passed|failed|error' || rc=1
	python tests/bench/targets.py log/bench.log
	exit $$rc

clean:
	rm -rf build install log
