"""The shipped small models: the shapes world (shapes.py), CLIP and VQGAN training (clip_train.py,
vqgan_train.py), evaluation (evaluate.py) and a deliberately different renderer (foreign.py).

`python -m worker.training clip|vqgan|all|eval` is the entry point; see __main__.py.
"""
