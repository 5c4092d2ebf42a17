# virtmon — every target does its own set-up and is safe to run again.
# `make run`  : the daemon in the foreground on libvirt's in-process test driver, with demo activity
#               (LISTEN=HOST:PORT for another metrics address, ALLOW_WRITE=1 to allow writes).
# `make test` : system packages, virtual environment, the lab (real libvirtd + KVM domains), the whole
#               suite (ruff, mypy, pytest), and the lab torn down again, also when tests fail.
# `make test-host2`: a booted Debian 12 container (systemd as PID 1, libvirt 11.3 and QEMU 10 from
#               bookworm-backports) with virtmon's Debian package, built against that libvirt,
#               installed by apt, and the suite of tests/host2 run against it from outside.
# `make deb`  : virtmon_VERSION_amd64.deb from the checkout (packaging/deb), checked by lintian.
# `make bench`: every benchmark against the lab, side by side with the peers (docs/PERFORMANCE.md).
# `make bench-sweep`: each cost against the number of domains, 10 to 10,000, for virtmon, the peers
#               and the bare call (about an hour); `make bench-plots` redraws its plots and table.
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
# promtool), systemd's tools (systemd-analyze, systemd-socket-activate, sysusers, tmpfiles),
# Cyrus SASL's saslpasswd2 and mechanisms for the private libvirtd that requires SASL, zsh
# (virtmonctl's zsh completion is tested in it), man with groff (the manual pages are rendered),
# and what the lab's guest is built from (tests/lab/guest.py: its kernel .deb is downloaded, not
# installed).
LAB_PACKAGES := $(RUN_PACKAGES) libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils \
                prometheus systemd prometheus-alertmanager sasl2-bin libsasl2-modules \
                libsasl2-modules-db zsh man-db busybox-static qemu-guest-agent e2fsprogs
# What `make test-host2` adds to the lab's: debootstrap builds the container's root file system,
# nspawn boots it (the Debian package installed in it is built inside, in a builder image), ip
# links it to the host (guests migrate between the lab and it), curl scrapes it.
HOST2_PACKAGES := debootstrap systemd-container util-linux iproute2 curl
# What `make deb` adds: lintian checks the package (dpkg-deb builds it, and is always there).
DEB_PACKAGES := $(RUN_PACKAGES) lintian
# What only `make bench` adds: the peers measured side by side with virtmon (bench/bench_peers.py);
# write_prometheus needs libmicrohttpd and protobuf-c, which collectd-core only suggests.
BENCH_PACKAGES := prometheus-libvirt-exporter collectd-core libmicrohttpd12 libprotobuf-c1

.PHONY: run test lab-up lab-down lint pytest bench bench-sweep bench-plots fuzz run-packages \
        lab-packages bench-packages venv bench-venv clean install-extras test-host2 \
        host2-packages deb deb-packages

# The test driver's domains live in the process and begin afresh every run: so does the state
# (a journal and alerts of the last run's domains would be about domains that no longer exist).
run: run-packages venv
	@if $(BIN)/virtmonctl --socket $(RUNDIR)/virtmon.sock status >/dev/null 2>&1; then \
	    echo "make run: a virtmon already runs on $(RUNDIR)/virtmon.sock: stop it first, or" \
	         "give this one a RUNDIR=DIR and LISTEN=HOST:PORT of its own" >&2; exit 1; fi
	@rm -rf $(RUNDIR)/state && mkdir -p $(RUNDIR)/state
	$(BIN)/virtmon run --uri test:///default --demo --listen $(LISTEN) --no-collector.admin \
	    --control-socket $(RUNDIR)/virtmon.sock --state-dir $(RUNDIR)/state$(if \
	    $(filter 1 yes true,$(ALLOW_WRITE)), --control.allow-write)

test: lab-packages venv
	$(MAKE) lab-up
	status=0; $(MAKE) lint pytest || status=$$?; $(MAKE) lab-down; exit $$status

# The images (the host and its builder) are built once per package versions and recipe (under
# /var/lib/virtmon-lab/host2, older ones removed); every run boots a fresh copy of the host and
# removes it again, also when tests fail.
# The lab comes up too: its guests migrate to the second host and back.
test-host2: lab-packages host2-packages venv
	$(MAKE) lab-up
	status=0; $(BIN)/pytest -p no:cacheprovider tests/host2 || status=$$?; $(MAKE) lab-down; \
	exit $$status

# The daemon's virtual environment is built here, libvirt-python against this host's libvirt
# (docs/install.md says why); lintian's remaining warnings are explained there too.
deb: deb-packages
	packaging/deb/build . .
	lintian --info virtmon_*_amd64.deb

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

bench: lab-packages bench-packages bench-venv
	$(MAKE) lab-up
	status=0; $(BIN)/python -m bench || status=$$?; $(MAKE) lab-down; exit $$status

# Not part of `make bench`: it takes about an hour. bench/results/sweep.json, then the plots
# (docs/perf-*.png) and the sweep section of docs/PERFORMANCE.md from it.
bench-sweep: lab-packages bench-packages bench-venv
	$(MAKE) lab-up
	status=0; $(BIN)/python -m bench.bench_sweep && $(BIN)/python -m bench.sweep_plots \
	    || status=$$?; $(MAKE) lab-down; exit $$status

bench-plots: bench-venv
	$(BIN)/python -m bench.sweep_plots

# virtmonctl's shell completion and both manual pages, written by the tools of .venv, where
# bash-completion, zsh and man look (PREFIX=/usr/local; DESTDIR for a staging directory).
PREFIX ?= /usr/local
SHARE   = $(DESTDIR)$(PREFIX)/share
install-extras: venv
	install -d $(SHARE)/bash-completion/completions $(SHARE)/zsh/site-functions \
	    $(SHARE)/man/man1 $(SHARE)/man/man8
	$(BIN)/virtmonctl completion bash > $(SHARE)/bash-completion/completions/virtmonctl
	$(BIN)/virtmonctl completion zsh > $(SHARE)/zsh/site-functions/_virtmonctl
	$(BIN)/python -m virtmon.manpage virtmonctl > $(SHARE)/man/man1/virtmonctl.1
	$(BIN)/python -m virtmon.manpage virtmon > $(SHARE)/man/man8/virtmon.8

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

deb-packages:
	$(call apt_ensure,$(DEB_PACKAGES))

host2-packages:
	$(call apt_ensure,$(HOST2_PACKAGES))

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The benchmarks' plots need matplotlib, from PyPI into .venv (the venv does not see Debian's).
bench-venv: $(VENV)/.bench-installed

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

clean:
	rm -rf $(VENV) $(RUNDIR) build *.egg-info virtmon_*_amd64.deb
