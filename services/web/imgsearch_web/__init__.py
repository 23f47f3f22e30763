"""imgsearch's HTTP/JSON gateway and web page, in front of the Search gRPC service."""
