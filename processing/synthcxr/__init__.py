"""SynthCXR (`synthcxr-v1`): a procedural chest-radiograph benchmark with CXAS-named anatomy masks, anatomy-defined
findings, CheXpert labels and free-text reports. See README.md in this folder (the dataset card).

    from asarg.processing.synthcxr.generator import generate_study          # one study in memory
    from asarg.processing.synthcxr.dataset import write_dataset, load_synthcxr, load_masks
"""

VERSION = "synthcxr-v1"  # kept in sync with generator.VERSION (asserted in tests); a change means a new version
