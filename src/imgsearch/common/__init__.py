"""Server runtime shared by the imgsearch services: errors, gRPC wiring, logs, metrics."""
