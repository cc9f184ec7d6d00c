# Two commands set everything up on a fresh machine: `make demo` and `make test`.
.PHONY: build demo test bench lint clean

build:
	cargo build --workspace --bins

demo: build
	./scripts/demo.sh

test:
	cargo test --workspace

bench:
	./scripts/bench.sh

lint:
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
