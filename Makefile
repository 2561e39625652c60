# Thin wrapper over CMake: `make run` and `make test` are the two set-up
# commands of the README. Both first install any missing Debian packages.

DEB_PACKAGES := build-essential cmake pkg-config libwebsockets-dev libnng-dev \
	libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libcmocka-dev \
	libssl-dev libjansson-dev libev-dev libwebsockets-evlib-ev openssl sqlite3 clang libclang-rt-14-dev \
	valgrind python3-protobuf protobuf-compiler python3-pip chromium \
	nats-server libnats-dev
JOBS ?= 2
BUILD ?= build
ASAN_BUILD ?= build-asan
DEV_SECRET ?= ./dev-secret
# Debian's Python: it has python3-protobuf (a pyenv python3 first on PATH
# would not).
PYTHON ?= /usr/bin/python3

FUZZ_SECONDS ?= 20
FUZZ_LONG_SECONDS ?= 600

.PHONY: all deps build build-asan run test test-normal test-asan \
	test-valgrind test-bench test-fuzz test-python python-proto test-browser \
	fuzz bench clean

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			apt-get update -q && apt-get install -y -q $$missing; \
		else \
			echo "missing Debian packages:$$missing (run as root: apt-get install$$missing)"; \
			exit 1; \
		fi; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DWSGATE_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-normal: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS)

# memcheck of the end-to-end scenario: the sidecar runs under valgrind and
# must exit 0 (no memory error, no definite leak) after SIGTERM.
test-valgrind: build
	cd $(BUILD) && WSGATE_TEST_VALGRIND=1 ./test_golden_path

# A few seconds of the benchmark tool, so that it cannot rot.
test-bench: build
	BUILD_DIR=$(BUILD) bench/run.sh --smoke

# Every libFuzzer harness for a short bounded time (clang build).
test-fuzz: deps
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# The Python client (clients/python) against the real sidecar of $(BUILD).
test-python: build
	WSGATE_BUILD_DIR=$(abspath $(BUILD)) $(PYTHON) -m unittest discover -s clients/python/tests

# clients/python/wsgate/wsgate_pb2.py is committed (pip installs need no
# protoc); its test fails when it is stale against the schema.
python-proto: deps
	protoc --proto_path=schema --python_out=clients/python/wsgate schema/wsgate.proto

# The browser client (clients/js): its npm dev dependencies when missing
# (npm ci, from package-lock.json), the bundles, the Node unit tests, then
# the headless Chromium test against a real sidecar from $(BUILD).
test-browser: build
	cd clients/js && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && \
		npm run build && npm test && \
		BUILD_DIR=$(abspath $(BUILD)) PYTHON=$(PYTHON) npm run test:browser

test: test-normal test-asan test-valgrind test-bench test-fuzz test-python test-browser
	@echo "make test: all suites passed (normal, asan+ubsan, valgrind, bench smoke, fuzz $(FUZZ_SECONDS)s each, python client, browser)"

fuzz: deps
	tests/fuzz/run.sh $(FUZZ_LONG_SECONDS)

bench: build
	BUILD_DIR=$(BUILD) bench/run.sh

run: build
	@if [ ! -f $(DEV_SECRET) ]; then \
		(umask 077; openssl rand -hex 32 > $(DEV_SECRET)); \
		echo "created development secret $(DEV_SECRET) (mode 0600)"; \
	fi
	@echo "token for user u1 (valid 1h):"
	@$(BUILD)/wsgatectl token --user u1 --ttl 3600 --secret-file $(DEV_SECRET)
	@echo "connect: TOKEN=\$$($(BUILD)/wsgatectl token --user u1 --secret-file $(DEV_SECRET)); npx wscat -c \"ws://127.0.0.1:8080/ws?access_token=\$$TOKEN\""
	@echo "send:    $(BUILD)/wsgatectl send --user u1 --type agent_started --run r1"
	exec $(BUILD)/wsgate --jwt-secret-file $(DEV_SECRET)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
