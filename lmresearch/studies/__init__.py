"""Declared ablation sweeps: an experiment file's trials (hyper), running them (trials, launchers),
and what they measured (results). The command line is `python -m lmresearch.sweep`."""
