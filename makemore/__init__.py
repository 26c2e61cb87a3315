"""makemore: a config-driven experiment framework for character-level language models."""
