# The two commands of the README: `make demo` and `make test`. Both start with `make deps`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: deps build release test lint demo install clean

deps:
	@./scripts/deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

release: deps
	$(CARGO) build --release -p mod_reqin_log -p ja4sensor

# Every test: unit, ring multi-process, JA4 corpus conformance, end-to-end with real httpd,
# sensor on lo and real TLS clients. Needs root (pcap on lo, httpd binding as root).
test: build lint
	$(CARGO) test --workspace -- --test-threads=1

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

demo: release
	./scripts/demo.sh

install: release
	./apxs/install.sh

clean:
	$(CARGO) clean
