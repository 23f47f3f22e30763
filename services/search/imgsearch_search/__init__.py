"""Search service: Embed+Insert ingestion and similarity search over Milvus, cached in Redis."""
