"""makemore's population launcher, `hydra/launcher=population`: a sweep's same-shape members train stacked."""
