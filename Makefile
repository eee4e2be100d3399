# The two commands of the README, and a few for developers.
#   make run    bring up a whole local system (throwaway PostgreSQL and Redis
#               unless DATABASE_URL / REDIS_URL are given, the producer and
#               two consumers); prints API_TOKEN=<token>
#   make test   install what is missing, build, run the whole suite (CTest)
#   make bench  the benchmark suite against BullMQ, pg-boss and raw Redis
#               (not part of make test; writes docs/performance.md)
#   make docs   regenerate docs/configuration.md from the configuration table
#   make dashboard-screenshot  regenerates docs/dashboard.png (headless
#               chromium against a throwaway system)

BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 45
JOBS ?= 2

.PHONY: all build test test-asan run deps fuzz bench docs clean dashboard-screenshot

all: build

deps:
	@sh scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DJR_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS)

# libFuzzer targets (clang, ASan+UBSan), each run FUZZ_SECONDS from its seed
# corpus; longer runs: tests/fuzz/README.md.
fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DJR_FUZZ=ON -DJR_SANITIZE=ON -DJR_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	cmake --build $(FUZZ_BUILD) -j$(JOBS) --target jr_fuzz
	cd $(FUZZ_BUILD) && ctest -L fuzz --output-on-failure -j$(JOBS)

run: build
	@sh scripts/run-local.sh $(BUILD)

# Installs what it needs (scripts/deps.sh bench: the test packages, gnuplot,
# perf), builds its own Release binaries in build-bench/; see tests/bench/run.py.
bench:
	@sh scripts/deps.sh bench
	/usr/bin/python3 tests/bench/run.py

# docs/configuration.md is generated from the table in common/config.c
# (tests/integration/test_docs.py fails when it is stale).
docs: build
	$(BUILD)/bin/producer --print-config-reference > docs/configuration.md

# The dashboard's overview, logged in, on a throwaway system with some work.
dashboard-screenshot: build
	JR_BIN=$(CURDIR)/$(BUILD)/bin /usr/bin/python3 tests/browser/screenshot.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) .run
