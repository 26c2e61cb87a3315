"""Research scripts built on the framework: the benchmark and the trigram question, each `python -m` runnable."""
