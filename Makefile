# Registry Browser: `make demo` shows the dashboard on sample images, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_PACKAGES := docker-registry skopeo umoci chromium
PYTEST_ARGS ?=

.PHONY: demo test test-postgres worker system-deps venv bench-sync bench-pages bench-load clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

venv: $(STAMP)

# Installs the Debian packages the tests and the demo run (a real registry, skopeo, Chromium).
system-deps:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v umoci >/dev/null || missing="$$missing umoci"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "Installing:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		else \
			echo "Missing system packages:$$missing"; \
			echo "Install them with: sudo apt-get install -y$$missing"; exit 1; \
		fi; \
	fi

test: system-deps venv
	$(BIN)/pytest $(PYTEST_ARGS)

# The same suite against a throwaway PostgreSQL server (installed with apt when missing).
test-postgres: system-deps venv
	deploy/with-postgres.sh $(BIN)/pytest $(PYTEST_ARGS)

# Runs queued syncs, notifications and retention (TASK_BACKEND=database, the production default).
worker: venv
	$(BIN)/python manage.py db_worker

demo: system-deps venv
	$(BIN)/python manage.py demo

bench-sync: system-deps venv
	$(BIN)/python bench/sync.py

bench-pages: system-deps venv
	$(BIN)/python bench/pages.py

bench-load: system-deps venv
	$(BIN)/pip install --quiet -e '.[bench,postgres]'
	deploy/with-postgres.sh $(BIN)/python bench/load.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo staticfiles .pytest_cache
