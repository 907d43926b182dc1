"""The query vector of a search: a text, an image, or both (find, the CLI's find, "find similar")."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from jobs.validation import JobError
from worker.clip.model import Clip


def query_vector(clip: Clip, text: str | None = None, image: Image.Image | None = None,
                 image_vector: np.ndarray | None = None) -> np.ndarray:
    """[D] float32 unit vector. With both a text and an image, their unit embeddings are added and
    renormalised, so each weighs the same whatever the model's text/image modality gap.
    image_vector: an image's embedding already made (a gallery item's), in place of `image`."""
    parts = []
    if text is not None:
        text = text.strip()
        if not text:
            raise JobError("The search text is empty: describe the image you are looking for.")
        parts.append(clip.embed_texts([text])[0])
    if image is not None:
        parts.append(clip.embed_images([image])[0])
    if image_vector is not None:
        parts.append(torch.nn.functional.normalize(torch.as_tensor(image_vector, dtype=torch.float32), dim=0))
    if not parts:
        raise JobError("Give a text to search for, an image to find similar ones, or both.")
    q = torch.stack(parts).sum(0)
    return torch.nn.functional.normalize(q, dim=0).numpy().astype(np.float32)
