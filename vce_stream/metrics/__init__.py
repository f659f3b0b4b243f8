"""Metrics: temporal mAP exactly as the RARE-VISION scorer computes it (SPEC §3)."""
