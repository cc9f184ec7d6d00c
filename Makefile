# Two commands set everything up on a fresh machine: `make demo` and `make test`.
.PHONY: build demo test bench bench-console lint clean

build:
	cargo build --workspace --bins

demo: build
	./scripts/demo.sh

test: bullmq-service/node_modules/.package-lock.json
	./scripts/test.sh

# The real BullMQ service some tests run against, installed exactly as locked.
bullmq-service/node_modules/.package-lock.json: bullmq-service/package-lock.json
	npm ci --prefix bullmq-service --no-audit --no-fund

bench:
	./scripts/bench.sh

# The web console's timeline of an incident with 10,001 alerts, in headless Chromium.
bench-console:
	./scripts/bench-console.sh

lint:
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	cargo clean
