# Thin wrappers: every target calls tasks.py, which does the work (and runs on machines without make).
# Extra arguments: make test ARGS="-k roi"
PYTHON ?= python3
ARGS ?=

.PHONY: train test notebooks demo oracle bench book ablate

train:
	$(PYTHON) tasks.py train $(ARGS)

test:
	$(PYTHON) tasks.py test $(ARGS)

notebooks:
	$(PYTHON) tasks.py notebooks $(ARGS)

demo:
	$(PYTHON) tasks.py demo $(ARGS)

oracle:
	$(PYTHON) tasks.py oracle $(ARGS)

bench:
	$(PYTHON) tasks.py bench $(ARGS)

book:
	$(PYTHON) tasks.py book $(ARGS)

ablate:
	$(PYTHON) tasks.py ablate $(ARGS)
