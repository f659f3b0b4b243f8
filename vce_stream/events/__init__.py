"""Events: what the temporal stage emits, and how they become the RARE-VISION JSON."""

from vce_stream.events.event import Event

__all__ = ["Event"]
