"""`python -m imgsearch_search`: run one Search server (settings: SEARCH_* or flags)."""

from imgsearch_search.server import main

if __name__ == "__main__":
    main()
