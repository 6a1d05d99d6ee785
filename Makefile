# The two commands of the README: `make demo` and `make test`. Both start with `make deps`.
SHELL := /bin/bash
CARGO ?= cargo
# A CI run builds once from a clean clone: incremental compilation data (2 GB of target/ here)
# would only cost disk and time there.
ifeq ($(CI),true)
export CARGO_INCREMENTAL ?= 0
endif

.PHONY: deps build release test lint demo bench soak install rpm deb clean

deps:
	@./scripts/deps.sh

build: deps
	$(CARGO) build --workspace --all-targets
	# The module with JA4T/JA4H (cargo feature `foxio`), for tests/tests/module_inline.rs; its own
	# target dir, so the default module (and the packages) stay without it.
	$(CARGO) build -p mod_reqin_log --features foxio --target-dir target/foxio

release: deps
	$(CARGO) build --release -p mod_reqin_log -p ja4sensor -p ja4sensor-pcap -p reqin-shipper

# Every test: unit, ring multi-process, JA4 corpus conformance, end-to-end with real httpd,
# sensor on lo and real TLS clients. Needs root (pcap on lo, httpd binding as root).
test: build lint
	$(CARGO) test --workspace -- --test-threads=1
	# JA4T/JA4H (cargo feature `foxio`, FoxIO License 1.1, off by default): built and checked
	# against FoxIO's published vectors so the feature stays correct.
	$(CARGO) test -p correlate-lib --features foxio
	$(CARGO) test -p ja4sensor-pcap --features foxio --test foxio_corpus
	$(CARGO) test -p mod_reqin_log --features foxio --target-dir target/foxio

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p correlate-lib -p ja4sensor -p ja4sensor-pcap --all-targets --features correlate-lib/foxio,ja4sensor/foxio,ja4sensor-pcap/foxio -- -D warnings
	$(CARGO) clippy -p mod_reqin_log --all-targets --features foxio --target-dir target/foxio -- -D warnings

demo: release
	./scripts/demo.sh

# Speed, as ratios against baselines measured in the same run (not part of `make test`).
bench: release
	$(CARGO) bench -p correlate-lib --bench ring
	python3 scripts/bench/overhead.py --repeats 5
	python3 scripts/bench/instructions.py
	python3 scripts/bench/newconn_cpu.py --pin --instances 3 --repeats 20 a=a b=b e=e s=s
	scripts/bench/sensor.sh
	python3 scripts/bench/live_rate.py
	python3 scripts/bench/memory.py --warmup 1000000 --requests 1000000
	$(CARGO) build --release -p ja4sensor-detect --example ship_validate
	python3 scripts/bench/detect.py --lines 1000000 --keys 100000 --repeats 3
	scripts/bench/verdict_instructions.sh
	$(CARGO) build --release -p correlate-lib --example verdict_lookups
	python3 scripts/bench/verdict_module.py
	scripts/bench/ship_throughput.sh
	python3 scripts/bench/ship_lag.py --duration 300
	$(CARGO) build --release -p ja4sensor-query --example gen_log
	$(CARGO) bench -p ja4sensor-query --bench seed004
	python3 scripts/bench/query.py

# Faults under load, about ten minutes (not part of `make test`): writes RELIABILITY.md.
soak: release
	python3 scripts/soak/soak.py

# The module into `apxs -q LIBEXECDIR` and its config snippets (Debian mods-available/ or RHEL
# conf.modules.d/ + conf.d/); `make install DESTDIR=/tmp/stage [LAYOUT=rhel]` for a staged install.
install: release
	DESTDIR="$(DESTDIR)" LAYOUT="$(LAYOUT)" ./apxs/install.sh

# Packages. rpm: mod_reqin_log and ja4sensor for el8/el9/el10 (one glibc 2.28 build, cargo
# zigbuild) in target/rpm/RPMS/x86_64/. deb: libapache2-mod-reqin-log and ja4sensor for this
# Debian/Ubuntu in target/debian/.
rpm: deps
	./rpm/build.sh rpm

deb: deps
	./rpm/build.sh deb

clean:
	$(CARGO) clean
