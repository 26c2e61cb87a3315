"""makemore's Hydra sweeper on current Optuna (ask-and-tell): `hydra/sweeper=optuna`."""
