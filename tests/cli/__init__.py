"""Tests of the `imgsearch` CLI, the Python client and the local stack (`imgsearch up`)."""
