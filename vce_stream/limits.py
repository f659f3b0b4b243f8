"""Upper bounds on every size that comes from a file or a setting, and the one check that applies them.

A number read from a YAML file, a command-line option, a scores file or an event JSON decides how much
memory or time a run takes. Each one is bounded here, far above any real exam (a capsule exam has
50,000-200,000 frames; the whole Galar set 3.5 million), so a typo or a hostile file is refused with
one line instead of allocating gigabytes.
"""

from __future__ import annotations

from vce_stream.errors import ConfigError

# A frame index (file number, decode position plus offset, event start or end). 10**15 is exact in a
# float64 and an int64, so indices survive JSON, numpy and every arithmetic step without wrapping.
MAX_FRAME_INDEX = 10**15
# Frames of one scores file (all videos together): 20 million frames x 17 labels x 4 bytes = 1.4 GB.
MAX_SCORE_FRAMES = 20_000_000
# Videos in one scores file or event JSON.
MAX_VIDEOS = 100_000
# Events of one event JSON (all videos together).
MAX_EVENTS = 10_000_000

# Temporal settings (frames). A median window of 10,001 frames is 7 minutes of a 25 fps capsule video.
MAX_WINDOW = 10_001
MAX_GAP = 100_000
MAX_MIN_LEN = 100_000
MAX_FILL = 100_000
# Decoding look-ahead and radii (frames).
MAX_LOOKAHEAD = 1_000_000
# Batches and queues: a batch of 4,096 224-pixel frames is 600 MB of uint8 input.
MAX_BATCH = 4_096
MAX_QUEUE_DEPTH = 64
# Image sides in pixels, threads, workers, retries, epochs, events per label.
MAX_IMAGE_SIDE = 4_096
MAX_THREADS = 1_024
MAX_COUNT = 1_000_000


def check_range(name: str, value: int | float, low: int | float, high: int | float) -> None:
    """ConfigError (one line naming the setting) unless low <= value <= high."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name} must lie in [{low:,}, {high:,}], got {value!r}")


def check_maxima(settings: object, prefix: str, maxima: dict[str, int | float]) -> None:
    """ConfigError naming `prefix.field` for the first field of `settings` above its maximum (None and
    lower bounds are left to the dataclass's own checks). Each config dataclass calls it from
    `__post_init__` with the fields that size memory or work."""
    for name, high in maxima.items():
        value = getattr(settings, name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for item in values:
            if item is not None and not isinstance(item, bool) and isinstance(item, (int, float)) and item > high:
                raise ConfigError(f"{prefix}{name} must be at most {high:,}, got {item:,}")
