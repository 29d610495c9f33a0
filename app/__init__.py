"""The container app: what `process.py` runs for grand-challenge, and the command-line tools around the detector.

`app.algorithm` (the run: plan, detect, write), `app.preflight` (every check before a model loads), `app.output`
(the platform's JSON), `app.overlay` (a picture to look at), `app.score_patches` (`python -m app.score_patches`).
The detector itself is `model` (`from model import Detector`); nothing in `model` imports from here.
"""
