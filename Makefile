# virtmon — every target does its own set-up and is safe to run again.
# `make run`  : the daemon in the foreground on libvirt's in-process test driver, with demo activity.
# `make test` : system packages, virtual environment, the lab (real libvirtd + KVM domains), the whole
#               suite (ruff, mypy, pytest), and the lab torn down again, also when tests fail.
# `make fuzz` : the configuration fuzzer's long run (FUZZ_EXAMPLES random documents, on the test
#               driver: no lab) through check-config, run and SIGHUP reloads.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LISTEN ?= 127.0.0.1:9786
RUNDIR := $(CURDIR)/run

# What building libvirt-python and running on the test driver need.
RUN_PACKAGES := libvirt-dev libvirt0 pkg-config gcc python3-dev python3-venv
# What the lab and the end-to-end tests add: a real libvirtd with QEMU/KVM, Prometheus (and
# promtool), systemd's tools (systemd-analyze, systemd-socket-activate, sysusers, tmpfiles), and
# what the lab's guest is built from (tests/lab/guest.py: its kernel .deb is downloaded, not
# installed).
LAB_PACKAGES := $(RUN_PACKAGES) libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
                prometheus systemd prometheus-alertmanager busybox-static qemu-guest-agent
# What only `make bench` adds: the peers measured side by side with virtmon (bench/bench_peers.py);
# write_prometheus needs libmicrohttpd and protobuf-c, which collectd-core only suggests.
BENCH_PACKAGES := prometheus-libvirt-exporter collectd-core libmicrohttpd12 libprotobuf-c1

.PHONY: run test lab-up lab-down lint pytest bench fuzz run-packages lab-packages bench-packages \
        venv clean

run: run-packages venv
	@mkdir -p $(RUNDIR)/state
	$(BIN)/virtmon run --uri test:///default --demo --listen $(LISTEN) --no-collector.admin \
	    --control-socket $(RUNDIR)/virtmon.sock --state-dir $(RUNDIR)/state

test: lab-packages venv
	$(MAKE) lab-up
	status=0; $(MAKE) lint pytest || status=$$?; $(MAKE) lab-down; exit $$status

lab-up: lab-packages venv
	$(BIN)/python -m tests.lab.lab up

lab-down: venv
	$(BIN)/python -m tests.lab.lab down

lint: venv
	$(BIN)/ruff check virtmon tests bench
	$(BIN)/mypy virtmon

pytest: venv
	$(BIN)/pytest -p no:cacheprovider

# The suite runs the same tests with 300 derandomized documents; this runs thousands of random ones.
FUZZ_EXAMPLES ?= 5000
fuzz: run-packages venv
	VIRTMON_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -p no:cacheprovider -s \
	    tests/test_config_fuzz.py

bench: lab-packages bench-packages venv
	$(MAKE) lab-up
	status=0; $(BIN)/python -m bench || status=$$?; $(MAKE) lab-down; exit $$status

# Install the missing Debian packages; ask no mirror when all are there. Recommends are not
# needed (and without a running systemd the install starts nothing).
define apt_ensure
	@missing=""; for p in $(1); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	        || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends $$missing; fi
endef

run-packages:
	$(call apt_ensure,$(RUN_PACKAGES))

lab-packages:
	$(call apt_ensure,$(LAB_PACKAGES))

bench-packages:
	$(call apt_ensure,$(BENCH_PACKAGES))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) $(RUNDIR) build *.egg-info
