"""Evaluation: the CheXpert-style report labeler, CE-F1, NLG metrics, paired significance tests and
sentence-to-anatomy grounding. Submodules are imported explicitly; this file stays import-free so that the
pure-Python labeler does not pull in torch."""
