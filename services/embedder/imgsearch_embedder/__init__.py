"""Embedder service: image bytes in, L2-normalised CNN embeddings out, over gRPC."""
