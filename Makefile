# The README's two commands: `make demo` (the main job) and `make test` (the whole suite).
# Both create the virtual environment and install the project on first use; nothing else is needed by hand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test unit tools clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "Python 3.11 is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lam demo

# promtool (Debian's prometheus package) checks the Prometheus configuration and alert rules in the tests.
tools:
	@command -v promtool > /dev/null || { echo "installing promtool (Debian package prometheus)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		prometheus > /dev/null; }

test: $(STAMP) tools
	$(VENV)/bin/pytest

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit

clean:
	-$(VENV)/bin/lam broker stop
	rm -rf .lam artifacts
