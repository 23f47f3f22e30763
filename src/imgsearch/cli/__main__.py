"""`python -m imgsearch.cli`: the same as the `imgsearch` console script."""

from imgsearch.cli.main import app

if __name__ == "__main__":
    app(prog_name="imgsearch")
