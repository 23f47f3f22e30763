"""Tests of the Search service, against real Redis, Milvus (both back ends) and the Embedder."""
