"""The Gradio Space's files, shipped with asarg as data so that `asarg push-space` works from an installed wheel.

The Space runs them as flat modules (`python app.py`), not as this package: do not import them from here."""
