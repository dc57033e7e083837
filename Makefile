# hep2pcap — every entry point. `make run` and `make test` work on a fresh Debian machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SAMPLE ?= fixtures/hep/sample-call.hep
OUT    ?= /tmp/hep2pcap-sample.pcapng

.PHONY: help install install-dev tools run test lint type unit e2e fmt docs golden bench soak fuzz \
  soak-attacks clean

help:
	@echo "make run      set up .venv, convert $(SAMPLE) and show what is in it"
	@echo "make test     set up everything (venv, dev deps, tshark, sngrep) and run the whole suite"
	@echo "make bench    performance benchmark against sngrep (not part of the tests)"
	@echo "make soak     10 min of live capture at SOAK_RATE msg/s, 60 s files; RSS, losses, ISBs"
	@echo "make fuzz     coverage-guided fuzzing (atheris) of every input parser, FUZZ_SECONDS=$(FUZZ_SECONDS)"
	@echo "              per target; FUZZ_SECONDS=600 runs well over 1M cases (not part of the tests)"
	@echo "make soak-attacks  the attacks of tests/test_attacks.py, ATTACK_SECONDS=$(ATTACK_SECONDS) each"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q -e .

install-dev: $(PY)
	$(PY) -m pip install -q -e '.[dev]'

# tshark and sngrep are what the end-to-end tests check our output with (openssl makes the
# TLS listener's test certificate); kamailio (siptrace, tls), sipp (sip-tester) and rtpengine
# are the real HEP senders the e2e tests run; gcc (with python3-dev's headers for a Debian
# Python) builds the optional native frame engine
# (hep2pcap/engine/_native.c), so test and bench install the tools before the package.
# Installed with apt-get when missing and we are root; tshark's debconf question is answered
# up front.
TOOLS := tshark sngrep openssl kamailio kamailio-tls-modules sip-tester rtpengine-daemon \
  tmux gcc python3-dev
tools:
	@missing=""; for t in $(TOOLS); do \
	  dpkg-query -W -f='$${Status}' $$t 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$t"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing:$$missing; run: sudo apt-get install$$missing"; exit 0; fi; \
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

run: install
	$(VENV)/bin/hep2pcap convert $(SAMPLE) -w $(OUT)
	@echo "--- $(OUT) (tshark, if installed):"
	@if command -v tshark >/dev/null; then \
	  tshark -r $(OUT) -t ad -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE 2>/dev/null; \
	  echo "--- packet comments (what HEP said):"; \
	  tshark -r $(OUT) -T fields -e frame.number -e frame.interface_name -e frame.comment 2>/dev/null; \
	else echo "(tshark not installed: 'make tools' installs it)"; fi

test: tools install-dev lint type unit e2e

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# tests/e2e/conftest.py is checked on its own: two conftest modules cannot share a run.
type:
	$(PY) -m mypy hep2pcap tests
	$(PY) -m mypy tests/e2e/conftest.py

# The unit run looks for the optional public captures (tests/public_captures.py) in a folder
# that does not exist: every run proves that a clone with nothing beside it passes. The
# tests marked `public` run again in the e2e run, with the captures where they are.
NO_PUBLIC := $(CURDIR)/.no-public-captures
unit:
	HEP2PCAP_PUBLIC_CAPTURES=$(NO_PUBLIC) $(PY) -m pytest -m "not e2e"

e2e:
	$(PY) -m pytest -m "e2e or public"

fmt:
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

docs: install-dev
	$(PY) tests/test_docs.py

golden: install
	$(PY) tests/make_golden.py

bench: tools install-dev
	$(PY) bench/run.py

# The soak (issue 14): a benchmark, not a test. bench/soak.py; figures in bench/README.md.
SOAK_RATE    ?= 50000
SOAK_SECONDS ?= 600
SOAK_ROTATE  ?= 60
soak: install-dev tools
	$(PY) bench/soak.py --rate $(SOAK_RATE) --seconds $(SOAK_SECONDS) --rotate $(SOAK_ROTATE)

# Coverage-guided fuzzing (issue 6): tests/fuzz.py runs the targets hep, stream, pcap and
# convert one after another, each for FUZZ_SECONDS (libFuzzer -max_total_time; -timeout
# catches hangs), seeded from fixtures/hep, fixtures/pcap and fixtures/malformed, and prints
# the executed cases per target. Crash inputs land in $(FUZZ_DIR)/artifacts/.
FUZZ_SECONDS ?= 120
FUZZ_TIMEOUT ?= 10
FUZZ_DIR     ?= /tmp/hep2pcap-fuzz
fuzz: install-dev
	$(PY) -m pip install -q -e '.[fuzz]'
	nice $(PY) tests/fuzz.py all --seconds $(FUZZ_SECONDS) --timeout $(FUZZ_TIMEOUT) --work $(FUZZ_DIR)

# The bounded loopback attacks of tests/test_attacks.py (issue 16), each ATTACK_SECONDS long
# with a good agent sending beside it; prints one line per attack (not part of the tests).
ATTACK_SECONDS ?= 20
soak-attacks: install-dev
	cd tests && nice ../$(PY) attacks.py --seconds $(ATTACK_SECONDS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
