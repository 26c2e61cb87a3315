"""`python -m makemore [group=option ...] [key=value ...]`: train one run, as `makemore-train` does."""

import sys

from makemore.entrypoints import train

if __name__ == "__main__":
    sys.exit(train())
