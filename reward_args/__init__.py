"""Step 1 configs: `model_config.py` (which model, full/LoRA/QLoRA, which data) and `training_config.py`."""
