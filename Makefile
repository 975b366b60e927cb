# The two entry points of the README: `make demo` and `make test`.
# Each creates or refreshes .venv, installs what is missing (Debian packages too, when we
# are root and apt-get exists), then runs.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_DIR ?= demo_out
DEB_PACKAGES := ffmpeg sox espeak-ng flite chromium

.PHONY: demo test system-deps venv clean default-bundle

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Optional decoders/tools: ffmpeg (m4a/opus, codec augmentation), sox, espeak-ng (spoken
# summaries, TTS spoofs), flite (TTS spoofs), chromium (headless: the run page's browser
# test, the README's screenshot). Installed when possible; spoofray explains what is
# missing otherwise.
system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	  else echo "note: missing$$missing (not root or no apt-get); tests needing them will skip"; fi; \
	fi

demo: system-deps venv
	$(PY) jobs/demo.py --output $(DEMO_DIR)

# Rebuild the shipped spoofray-base from ../shared/data: leave-one-source-out folds, then the
# bundle (threshold from the folds' held-out real speech) into spoofray/models/default_bundle.
GEN_WORK ?= /tmp/spoofray-generalisation
default-bundle: system-deps venv
	$(PY) experiments/generalisation.py --work $(GEN_WORK) --ship
	$(PY) experiments/segment_rule.py --work $(GEN_WORK) --band wide --write-bundle
	$(PY) experiments/segment_rule.py --work $(GEN_WORK) --band narrow --write-bundle

test: system-deps venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .hypothesis
