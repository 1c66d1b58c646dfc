"""Step schedules like "250" (every 250 steps) or "0-1000:250,1000-:1000" (start-end:every, end exclusive)."""

from __future__ import annotations

from dataclasses import dataclass

from rag_e2e.errors import ConfigError


@dataclass(frozen=True)
class RefreshSchedule:
    """Steps at which the index is rebuilt: `start + j * every` inside each [start, end) segment, step 0 excluded."""

    segments: tuple[tuple[int, int | None, int], ...]  # (start, end or None for open-ended, every)

    @classmethod
    def parse(cls, text: str, key: str = "schedule") -> RefreshSchedule:
        """"N" -> every N steps; "a-b:N,b-:M" -> every N in [a, b), then every M from b on."""
        text = str(text).strip()
        if text.isdigit():
            text = f"0-:{text}"
        segments = []
        for part in text.split(","):
            try:
                span, every_text = part.split(":")
                start_text, end_text = span.split("-")
                start, every = int(start_text), int(every_text)
                end = int(end_text) if end_text.strip() else None
            except ValueError:
                raise ConfigError(f"`{key}`: cannot read {part!r}; write N or ranges like 0-1000:250,1000-:1000") \
                    from None
            if every < 1 or start < 0 or (end is not None and end <= start):
                raise ConfigError(f"`{key}`: {part!r} needs every >= 1 and 0 <= start < end")
            segments.append((start, end, every))
        segments.sort()
        for (_, end, _), (start, _, _) in zip(segments, segments[1:]):
            if end is None or end > start:
                raise ConfigError(f"`{key}`: ranges overlap in {text!r}")
        return cls(tuple(segments))

    def due(self, step: int) -> bool:
        """Whether a refresh is scheduled at `step` (steps already taken)."""
        return step > 0 and any(start <= step and (end is None or step < end) and (step - start) % every == 0
                                for start, end, every in self.segments)

    def last_due(self, step: int) -> int:
        """The latest scheduled step <= `step` (0 if none): where a resumed run's index should be from."""
        best = 0
        for start, end, every in self.segments:
            top = step if end is None else min(step, end - 1)
            if top >= start:
                best = max(best, start + (top - start) // every * every)
        return best
