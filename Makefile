# desync_ref: `make demo` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
IMPL   ?= $(BIN)/python -m desync_ref
PYTEST := $(BIN)/python -m pytest

.PHONY: setup system-deps bench-http-deps apt-need demo test bench-http bench-stores test-compiled test-pure conformance fixtures lint bench clean fuzz

setup: system-deps $(STAMP)

# casync is the oracle of the test suite; zstd is handy for looking into stores;
# ca-certificates gives the HTTPS tests a system trust store to add their test CA to.
# The real servers the store tests start: Ceph's RADOS gateway (S3), the CNCF registry
# (OCI), OpenSSH (ssh://, sftp://); xfsprogs makes the reflink test's
# loop-mounted file system; libfuse2 and fuse3's fusermount serve the FUSE mounts;
# chromium and its driver show `dump --html` pages to the browser test; groff renders the
# man pages `manpage` writes.
system-deps:
	@$(MAKE) --no-print-directory apt-need NEED="casync:casync zstd:zstd update-ca-certificates:ca-certificates \
	  ceph-mon:ceph-mon ceph-osd:ceph-osd radosgw:radosgw docker-registry:docker-registry \
	  sshd:openssh-server ssh:openssh-client mkfs.xfs:xfsprogs \
	  fusermount:fuse3 -:libfuse2 chattr:e2fsprogs losetup:mount \
	  chromium:chromium chromedriver:chromium-driver groff:groff-base"

# nginx-light and wrk are only the HTTP load benchmark's reference and load generator.
bench-http-deps:
	@$(MAKE) --no-print-directory apt-need NEED="nginx:nginx-light wrk:wrk"

# NEED is a list of command:package pairs (command "-": a library, asked of dpkg); missing
# packages are installed as root.
apt-need:
	@missing=""; \
	for pair in $(NEED); do \
	  cmd="$${pair%%:*}"; pkg="$${pair#*:}"; \
	  if [ "$$cmd" = - ]; then dpkg -s "$$pkg" >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	  else command -v "$$cmd" >/dev/null 2>&1 || missing="$$missing $$pkg"; fi; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else echo "please install:$$missing (apt-get install$$missing)"; exit 1; fi; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The editable install compiles the kernels with mypyc in place when a compiler exists.
# editable_mode=compat: a .pth line naming the checkout, where the default mode installs an
# import hook that site.py loads (with pathlib) at every start, ~20 ms of each command (a
# regular install has neither). setuptools calls the mode transitional: if a later one drops
# it, the default mode is installed instead.
$(STAMP): pyproject.toml setup.py $(wildcard desync_ref/kernels/*.py) | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip setuptools wheel 'mypy>=1.10'
	$(BIN)/pip install -q --no-build-isolation --config-settings editable_mode=compat -e '.[test]' 2>/dev/null \
	  || $(BIN)/pip install -q --no-build-isolation -e '.[test]'
	@$(BIN)/desync-ref --version
	@touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

# One suite, two backends (compiled kernels, then the pure-Python fallback). Under these
# targets a test that would skip for a missing part (casync, desync's fixtures, ...) fails
# (tests/conftest.py, conformance/); pytest's exit 5 (no test ran) fails them as well.
test test-compiled test-pure: export DESYNC_REF_REQUIRE_COMPONENTS = 1
# Tests marked compiled_pass_only exercise no kernel (store backends against their servers,
# the HTTP servers and their load, crash and concurrency runs, config, fuzz corpora,
# progress, mounts): the compiled pass alone runs them; the kernels' equivalence has its
# own tests (compiled against pure), which run in both passes.
PURE := DESYNC_REF_PURE=1
PURE_SELECT := -m "not compiled_pass_only"

test: setup
	$(BIN)/desync-ref --version
	$(PYTEST) -q tests conformance
	$(PURE) $(PYTEST) -q $(PURE_SELECT) tests

test-compiled: setup
	$(PYTEST) -q tests conformance

test-pure: setup
	$(PURE) $(PYTEST) -q $(PURE_SELECT) tests

conformance: setup
	$(BIN)/python -m conformance --impl "$(IMPL)"

fixtures: setup
	$(BIN)/python fixtures/make_fixtures.py

lint: setup
	$(BIN)/ruff check desync_ref tests conformance fixtures scripts benchmarks setup.py
	$(BIN)/mypy --strict desync_ref

# Kernels alone (pytest-benchmark), then casync side by side, then peak RSS on 1 GiB, then
# the image update: a 1 GiB image with 2 % changed, extracted with the old one as seed; then
# sparse images (a 16 GiB file with 64 MiB of data, a 4 GiB file half holes; needs ~20 GiB
# of free disk for the catars).
# Each command's start-up is part of what is timed: with PYTHONDONTWRITEBYTECODE set (as on
# these machines) an editable install would compile every module again on every start,
# which a regular install (bytecode written by pip) never does.
bench: setup
	@command -v /usr/bin/time >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q time; }
	$(BIN)/python -m compileall -q desync_ref
	$(BIN)/python -m pytest -q -p no:cacheprovider benchmarks/test_kernels.py --benchmark-enable
	$(BIN)/python benchmarks/compare_casync.py
	$(BIN)/python benchmarks/measure_rss.py
	$(BIN)/python benchmarks/seed_update.py
	$(BIN)/python benchmarks/sparse.py

# make and extract through the remote backends against their real servers (the ones the
# tests start), next to a local store: S3 on Ceph RGW, SFTP and ssh:// on OpenSSH.
bench-stores: setup
	$(BIN)/python benchmarks/bench_s3.py
	$(BIN)/python benchmarks/bench_sftp.py
	$(BIN)/python benchmarks/bench_ssh.py

# Coverage-guided fuzzing (atheris) of every parser of untrusted bytes: each target of
# fuzz/targets.py for FUZZ_TIME seconds under a 2 GiB memory cap; prints executions per
# target and the crashes found, known (fuzz/known.py) or new (fuzz/README.md); exits 1 on any crash. CI runs the short replay, tests/test_fuzz_corpus.py.
FUZZ_TIME ?= 60
# Only the `fuzz` extra's packages are installed (re-installing the project would rebuild the kernels).
fuzz: setup
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['fuzz'])" | xargs $(BIN)/pip install -q
	$(BIN)/python -m fuzz.run --time $(FUZZ_TIME) --rss-mb 2048

clean:
	rm -rf build $(VENV) desync_ref/kernels/*.so

# chunk-server against nginx on the same store, loopback only, bounded time (benchmarks/http_load.py).
bench-http: setup bench-http-deps
	$(BIN)/python -m compileall -q desync_ref
	$(BIN)/python benchmarks/http_load.py
