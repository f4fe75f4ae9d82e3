"""One training config per RLHF method: `<method>_config.py`, each a TRL config with this toolkit's defaults."""
