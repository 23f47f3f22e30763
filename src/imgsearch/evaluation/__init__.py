"""`imgsearch eval`: retrieval quality measured on real photos and Fashion-MNIST.

Modules: `datasets` (the photo sets, built deterministically from Debian photo
packages and skimage.data), `edits` (the edited query kinds), `metrics`
(recall@k, average precision, mAP@k, precision@k, exact search), `runner`
(the live stack beside exact search), `report` (docs/evaluation.md and plots).
"""
