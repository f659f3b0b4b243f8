"""Engines: what turns a batch of uint8 frames into per-frame label probabilities."""
