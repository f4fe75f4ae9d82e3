"""evaluate.py's config: `eval_config.py` (which models, which judge, which prompts, how to generate)."""
