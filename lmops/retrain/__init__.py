"""Drift-triggered retraining: snapshot the drifted data, LoRA fine-tune the champion, evaluate, gate.
No Prefect here: `flows/retrain.py` wires these functions."""
