"""Frame embeddings: the model's unit image feature per frame, stored, searched and indexed (issue 13)."""
