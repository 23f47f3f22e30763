"""`python -m imgsearch_embedder`: run the Embedder service."""

from imgsearch_embedder.server import main

if __name__ == "__main__":
    main()
