# Two entry points for a fresh machine: `make run` and `make test`.
# Both create .venv and install the project from pyproject.toml; a stamp file
# makes the second call instant until pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Stage commands call `python`: the venv's must come first on PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install lock run test test-fast lint docs bench pr-report mlflow-server remote sweep clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# pip (not uv/poetry) so torch and torchvision come from this machine's disk;
	# ranges from pyproject.toml, exact versions from constraints.txt.
	$(BIN)/pip install --quiet -e ".[pipeline,tune,test,docs]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# Re-pin constraints.txt to what the venv holds now (after changing a range in pyproject.toml).
lock: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^signflow'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

run: install
	$(BIN)/dvc repro

# Two pytest-xdist workers, whole files each (module fixtures built once): most tests wait on
# subprocesses (dvc, servers) and use one core, so two workers finish the suite in about 2/3 of the time.
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadfile

# pytest exits 5 when it collected no test: that is a failure of the suite here too.
test: install
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

# ruff: pycodestyle, pyflakes, import order, bugbear, pyupgrade (pyproject.toml [tool.ruff]).
lint: install
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml, docs/) at http://127.0.0.1:8000, rebuilt on save.
# `mkdocs build --strict` is the check (tests/docs/ runs it): a broken link or anchor is an error.
docs: install
	$(BIN)/mkdocs serve

test-fast: install
	$(BIN)/python -m pytest $(XDIST) -m "not slow" $(PYTEST_ARGS)

# bench_scale.py runs its small sizes here (--quick); its full 10k-200k run: see benchmarks/README.md
bench: install
	for b in benchmarks/bench_*.py; do \
		case $$b in *bench_scale.py) extra=--quick;; *) extra=;; esac; \
		$(BIN)/python $$b $$extra || exit 1; \
	done

pr-report: install
	$(BIN)/signflow pr-report --base $${BASE:-main}

# The default DVC remote: make remote URL=s3://bucket/path [ENDPOINT=http://minio:9000];
# without URL, the folder ../<repo>-dvc-storage beside the checkout.
URL ?=
ENDPOINT ?=
remote: install
	$(BIN)/signflow remote $(URL) $(if $(ENDPOINT),--endpoint-url $(ENDPOINT))

# A grid of experiments on the DVC queue, e.g.
#   make sweep GRID="-S strategy=linear,full -S unknown.enabled=true,false" JOBS=2
# (or GRID="--grid sweep.yaml"); table in sweeps/sweep.md and sweeps/sweep.csv.
GRID ?=
JOBS ?= 1
sweep: install
	$(BIN)/signflow sweep $(GRID) --jobs $(JOBS)

# A tracking server for the team: SQLite store in mlflow-server/ unless MLFLOW_BACKEND_STORE_URI is set,
# artifacts in mlflow-server/artifacts unless MLFLOW_ARTIFACTS_DESTINATION is set (s3://... for teams).
MLFLOW_PORT ?= 5000
mlflow-server: install
	$(BIN)/signflow mlflow-server --port $(MLFLOW_PORT)

clean:
	rm -rf $(VENV) .pytest_cache site
