"""MIDOG mitosis detector: P4-equivariant ResNet applied densely, two-policy agreement ensemble, a screen in front.

Everything here except `model.p4resnet` (the training-time e2cnn network, imported by training only) runs with
torch and requirements.txt: numpy, scipy, scikit-image, SimpleITK, evalutils (process.py), safetensors, tqdm,
pillow, tifffile (`test/test_requirements.py` checks that list against the imports).
"""
