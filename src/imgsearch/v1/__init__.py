"""Generated gRPC and protobuf code for package `imgsearch.v1` (run `make proto`)."""
