"""The `imgsearch` command-line interface."""
