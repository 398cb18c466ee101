"""The CheXpert CE `evaluate` metric folder: `evaluate.load("metrics/chexpert_ce")` in the repository. Installed,
it ships as data of `asarg` so that `asarg push-metric` can copy it; evaluate never loads this file."""
