"""Coverage-guided fuzzers (atheris / libFuzzer) of the Embedder's input paths: `make fuzz`."""
