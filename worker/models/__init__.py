"""Real pretrained models: the catalogue (`catalogue.py`), the fetcher (`fetch.py`), what is
installed and verified (`store.py`), names -> folders and imagine profiles (`resolve.py`), and
`python -m worker models list|fetch` (`cli.py`). Torch-free: fetching never loads a model."""
