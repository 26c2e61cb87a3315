"""The one exception type users see: a bad input or setting, told in one line with its fix."""


class MakemoreError(Exception):
    """A problem with the user's data or config. Its message names the problem and the fix."""
