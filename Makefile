# ec2pass: the two commands are `make demo` and `make test`. See README.md.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
STACK := VENV=$(VENV) dev/stack.sh

.DEFAULT_GOAL := help
.PHONY: help venv dev up down demo test bench fuzz unit template-check lint fmt package deploy clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(VENV)/.installed: dev/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r dev/requirements.txt
	touch $@

venv: $(VENV)/.installed ## install the local tools (moto, cargo-lambda) into .venv/, once

dev: venv ## run moto and the functions (reloading on change) in the foreground; Ctrl-C stops all
	$(STACK) dev

up: venv ## start moto and the functions in the background
	$(STACK) up

down: ## stop what `make up` started
	$(STACK) down

demo: venv ## the narrated story against the local emulator; fails if any step does not happen
	cargo build --workspace --bins
	$(STACK) run -- cargo run --quiet -p ec2pass-tests --bin demo

# What `make test` shows while it runs; everything is in .dev/test.log.
export SHOWN := ^(test |test result:|     Running|error|warning: unused|failures:|thread |---- |burst|bench-smoke)

test: venv ## every test: template checks, unit, against moto, and end to end under cargo lambda watch
	@# The template checks (one core, Python) run while cargo builds: a cold build spends minutes
	@# in the AWS SDKs' single-threaded front end, with a core to spare.
	@mkdir -p .dev; $(VENV)/bin/python infra/check.py --self-test > .dev/template-check.log 2>&1 & checks=$$!; \
		built=0; cargo build --workspace --all-targets || built=$$?; \
		checked=0; wait $$checks || checked=$$?; tail -n 1 .dev/template-check.log; \
		if [ $$checked -ne 0 ]; then grep -v '^ok ' .dev/template-check.log; fi; \
		[ $$built -eq 0 ] && [ $$checked -eq 0 ]
	@mkdir -p .dev; rm -rf .dev/secrets .dev/logs/tests-*.log .dev/chat-messages; status=0; \
	$(STACK) run -- sh -c 'cargo test --workspace --all-targets --no-fail-fast -- --show-output; s=$$?; \
		target/debug/bench --smoke || s=1; exit $$s' 2>&1 \
		| tee .dev/test.log | grep --line-buffered -E "$$SHOWN" || status=$$?; \
	echo; grep -hE '^(fault-matrix|guard-load|issuer-load|issuer-nasty|threat-model|burst|bench-smoke):' .dev/test.log || true; \
	awk '/^property .* cases passed/ { n++; for (i = 2; i < NF; i++) if ($$i == "cases" && $$(i+1) == "passed") c += $$(i-1) } \
		END { printf "properties: %d properties, %d cases\n", n, c }' .dev/test.log; \
	awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f }' .dev/test.log; \
	cargo run --quiet -p ec2pass-tests --bin secrets-scan || status=1; \
	$(VENV)/bin/python dev/check_chat_messages.py .dev/chat-messages > .dev/chat-messages.log 2>&1 \
		|| { grep -v '^OK ' .dev/chat-messages.log; status=1; }; tail -n 1 .dev/chat-messages.log; \
	exit $$status

bench: venv ## performance figures from release builds: a table and target/bench/results.json (docs/performance.md)
	cargo build --release -p issuer -p guard
	cargo build --release --workspace --bin bench
	$(STACK) run -- target/release/bench

fuzz: ## the long property run over every outside-facing parser (100,000 cases per property, ~7 min)
	EC2PASS_FUZZ_CASES=$${EC2PASS_FUZZ_CASES:-100000} cargo test --workspace --test properties -- --nocapture

unit: ## only the tests that need nothing running
	cargo test --workspace --lib --bins

template-check: venv ## the offline checks of infra/template.yaml, and proof that broken copies fail them
	$(VENV)/bin/python infra/check.py --self-test

package: venv ## build the arm64 Lambda zips (issuer, follow-up, guard, attribution) with cargo-lambda (zig from .venv) and print their sizes
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/cargo-lambda lambda build --release --arm64 \
		--output-format zip -p issuer -p guard
	@for f in target/lambda/issuer/bootstrap.zip target/lambda/followup/bootstrap.zip \
		target/lambda/guard/bootstrap.zip target/lambda/attribution/bootstrap.zip; do \
		printf '%-40s %8d bytes\n' "$$f" "$$(wc -c < "$$f")"; done

# The SAM CLI gets its own environment: it pins other versions of boto3 and the SAM translator
# than the test tools in .venv/ do.
SAM_VENV := .venv-sam
SAM_VERSION := 1.170.0

$(SAM_VENV)/.installed:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check aws-sam-cli==$(SAM_VERSION)
	touch $@

deploy: venv $(SAM_VENV)/.installed ## sam build, then sam deploy --guided (needs AWS credentials; see README "Deploy")
	rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam build --beta-features \
		--template-file infra/template.yaml --config-file "$(CURDIR)/infra/samconfig.toml"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM_VENV)/bin/sam deploy --guided \
		--config-file "$(CURDIR)/infra/samconfig.toml"

# Clippy runs as `cargo clippy` runs it (clippy-driver as the compiler of the workspace's own
# crates, lint flags in CLIPPY_ARGS), but in the debug build `make test` uses rather than in a
# check build of its own: the AWS SDKs, most of a cold build, compile once for both. `.ci/run`
# exports the same two variables, so its `make test` finds the lint's build fresh.
CLIPPY_DRIVER := $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
CLIPPY_ENV := RUSTC_WORKSPACE_WRAPPER="$(CLIPPY_DRIVER)" CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

lint: ## rustfmt and clippy (warnings are errors), sharing make test's build
	cargo fmt --all -- --check
	@[ -n "$(CLIPPY_DRIVER)" ] || { echo "clippy-driver not found: rustup component add clippy"; exit 1; }
	$(CLIPPY_ENV) cargo build --workspace --all-targets

fmt: ## format the code
	cargo fmt --all

clean: down ## stop everything, remove build output and .venv/
	rm -rf target $(VENV) $(SAM_VENV) .dev .aws-sam
