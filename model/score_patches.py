"""`python -m model.score_patches DIR --out CSV`: the command's name in the project's fixed command contract.

The command lives in the container app (`app.score_patches`); this alias only runs it, so the detector library imports
nothing from the app.
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("app.score_patches", run_name="__main__", alter_sys=True)
