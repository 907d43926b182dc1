"""The shipped small models: the shapes world (shapes.py), CLIP and VQGAN training (clip_train.py,
vqgan_train.py), evaluation (evaluate.py), a deliberately different renderer (foreign.py), and an
independent judge of generated pictures trained on it alone (judge.py) with its panel (fidelity.py).

`python -m worker.training clip|vqgan|all|eval|judge` is the entry point; see __main__.py.
"""
