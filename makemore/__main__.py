"""`python -m makemore [group=option ...] [key=value ...]`: train one run, as `makemore-train` does."""

from makemore.entrypoints import train

if __name__ == "__main__":
    train()
