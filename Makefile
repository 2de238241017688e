# make lab    set up on first use, then open the course in JupyterLab
# make test   set up on first use, then run the whole test suite
# make course execute every lesson and reference solution in full mode, with a table of times

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.llmcourse-installed
PYTHON ?= python3
PORT   ?= 8888
# nbgrader runs helper commands (alembic) by name: put the venv first on PATH
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup lab test course exercises clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -c constraints.txt -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)"
	# models and data, once; what cannot be fetched now is fetched on first use (`llmcourse doctor` tells)
	$(PY) -m llmcourse.cli fetch || echo "warning: some models or data were not fetched; run: $(PY) -m llmcourse.cli doctor"
	touch $(STAMP)

# copies each chapter's exercises and lesson into my-work/ (once, never overwriting), then opens JupyterLab
lab: setup
	$(PY) -m llmcourse.cli lab --port $(PORT)

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup --durations=25

course: setup
	$(PY) -m llmcourse.run_notebooks

# regenerate exercises/ from solutions/ (instructors, after editing a source notebook)
exercises: setup
	for a in $(notdir $(wildcard solutions/[0-9][0-9]-*)); do $(VENV)/bin/nbgrader generate_assignment --force $$a || exit 1; done

clean:
	rm -rf $(VENV) gradebook.db .pytest_cache
