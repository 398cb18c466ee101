"""Training: the TRL SFT recipe runner (`sft_asarg.py`), its YAML recipes and the accelerate configs."""
