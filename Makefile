# Everything a newcomer needs; each target installs what it uses (uv + the locked environment).
# make demo   - the main job on the embedded default (offline, local Prefect, demo data)
# make test   - the fast suite (minutes): everything but real servers, clusters and browsers
# make test-integration - real Prefect servers and workers, PostgreSQL, Dask clusters, Chromium,
#                network namespaces, and the few tests marked slow (CI runs both targets)
# make lint   - ruff check + format check
# make bench  - benchmarks (see BENCHMARKS.md)
# make prefect-up / prefect-down - local Prefect server, process pool, deployments and a worker
# make docker-e2e - opt-in: build the Docker images, run the compose stack end to end (docker/README.md)

PORT ?= 4200
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install demo test test-integration test-all lint format bench prefect-up prefect-down docker-e2e clean

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

install: $(UV)
	$(UV) sync --frozen --extra dask  # the Dask task runner too: tests exercise it
	@command -v uv >/dev/null || echo 'note: uv is in ~/.local/bin, not on PATH; for the README commands run: export PATH="$$HOME/.local/bin:$$PATH"' 

demo: install
	$(UV) run python -m flows.demo

test: install
	$(UV) run pytest -q -m "not integration and not slow" --durations=10

test-integration: install
	$(UV) run pytest -q -m "integration or slow" --durations=10

test-all: install
	$(UV) run pytest -q

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: install
	$(UV) run python -m bench.train_speed --compare
	$(UV) run python -m bench.extract_speed

prefect-up: install
	ERC_PREFECT_PORT=$(PORT) scripts/prefect-up.sh

prefect-down:
	scripts/prefect-down.sh

# Needs a Docker engine (or root and Debian's docker.io to start one); ~5 min cold, see BENCHMARKS.md.
docker-e2e:
	scripts/docker-e2e.sh

clean:
	rm -rf outputs .pytest_cache .ruff_cache
