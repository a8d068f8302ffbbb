# The two commands a new machine needs: `make run` and `make test`.
# Both create .venv and install the project into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?=
MONTH ?= 2026-10

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false

.PHONY: install run test browser lint clean

$(BIN)/gymchurn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/gymchurn

# Without DATA: simulate six months of clients and score each in turn.
# With DATA: load that file as MONTH and score that month. REPLACE=1 first
# deletes what MONTH already holds.
run: install
ifeq ($(strip $(DATA)),)
	$(BIN)/gymchurn demo
else
	$(BIN)/gymchurn load-csv "$(DATA)" --month $(MONTH) $(if $(strip $(REPLACE)),--replace)
	$(BIN)/gymchurn run --month $(MONTH)
endif

# One worker a core; each test file runs whole on one worker, so that its
# module-wide fixtures are built once. The longest files go first (the order
# is in tests/conftest.py).
test: install browser
	$(BIN)/python -m pytest -n auto --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The report's browser test needs Chromium: install it when this user can,
# else say that the test will be skipped.
browser:
	@if command -v chromium >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
			|| echo "installing chromium failed: the report's browser check will be skipped"; \
	else \
		echo "chromium not found and not installable here: the report's browser check will be skipped"; \
	fi

lint: install
	$(BIN)/ruff check gymchurn flows tests benchmarks
	$(BIN)/ruff format --check gymchurn flows tests benchmarks

clean:
	rm -rf $(VENV) .gymchurn output models/*.skops
