"""`python -m imgsearch_web`: run the HTTP gateway (settings: WEB_* or flags)."""

from imgsearch_web.server import main

if __name__ == "__main__":
    main()
