"""rlhfkit: the helpers behind the entry scripts (data, models, methods, PPO; `report/`: what reports on a run).

The package map is in docs/copy-a-script.md; `python script/reading_path.py -- train_rlhf.py ...` lists what a run
loads.
"""

DEMO_MODEL = "models/SmolLM2-135M-Instruct"  # the default model, made by `python -m rlhfkit.demo_model`
