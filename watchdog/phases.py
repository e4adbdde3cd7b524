"""Status -> phase classification (pure): which phase of PRODUCT.md's table a status is in.

``taskStatusText`` decides first and the numeric ``taskStatus`` second, because the documented
numbers are incomplete and the API's own example contradicts them (4 = "InReview"). In order:

1. the normalised text is in the table (defaults plus ``[phases]``, which may override);
2. a text ending in ``failed`` is ``failed``;
3. a text starting with ``queued`` is ``queued`` until pre-processing has started, then
   ``processing`` (a later stage's queue);
4. otherwise (unknown text, or no text) the number decides when it is in the table, else the
   phase is ``processing`` so the processing budget still applies; the status is then reported
   as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from watchdog.models import Phase, TaskStatus, normalise_status

if TYPE_CHECKING:
    from watchdog.settings import PhasesSettings

# PRODUCT.md "Task phases"; texts as the API spells them, normalised when the table is built.
_DEFAULT_TEXTS: Mapping[Phase, tuple[str, ...]] = {
    Phase.DONE: ("Processed", "ExportCompleted", "Deleted", "Deleting", "Archived", "Completed"),
    Phase.REVIEW: ("InReview", "ToReview", "PendingReview"),
    Phase.QUEUED: ("QueuedForPreProcessing",),
    Phase.PROCESSING: ("PreProcessingInProgress", "PreProcessingSuccessful"),
}
_DEFAULT_NUMBERS: Mapping[Phase, tuple[int, ...]] = {
    Phase.DONE: (19, 20),
    Phase.FAILED: (32, 33, 35),
    Phase.QUEUED: (30,),
    Phase.PROCESSING: (31, 34),
}


@lru_cache(maxsize=4096)
def normalised(text: str) -> str:
    """``normalise_status`` with a bounded cache: a fleet shows only a handful of texts."""
    return normalise_status(text)


@dataclass(frozen=True, slots=True)
class PhaseTable:
    """Exact lookups: normalised text -> phase and number -> phase. Treat as read-only."""

    texts: Mapping[str, Phase]
    numbers: Mapping[int, Phase]

    @classmethod
    def build(cls, extra: PhasesSettings | None = None) -> PhaseTable:
        """The default table of PRODUCT.md, extended (and possibly overridden) by ``[phases]``."""
        texts = {
            normalise_status(text): phase
            for phase, entries in _DEFAULT_TEXTS.items()
            for text in entries
        }
        numbers = {
            number: phase for phase, entries in _DEFAULT_NUMBERS.items() for number in entries
        }
        if extra is not None:
            for phase in Phase:
                for entry in getattr(extra, phase.value):
                    if isinstance(entry, int):
                        numbers[entry] = phase
                    elif norm := normalise_status(entry):
                        texts[norm] = phase
        # Plain dicts, not read-only proxies: classify() runs in the hot path of every cycle.
        return cls(texts=texts, numbers=numbers)


@dataclass(frozen=True, slots=True)
class Classification:
    """The phase of a status; ``unknown`` is what to report once as ``task.unknown_status``."""

    phase: Phase
    unknown: str | None = None


# Known statuses share these instances, so the common path allocates nothing.
_KNOWN: Mapping[Phase, Classification] = {phase: Classification(phase) for phase in Phase}
_AS_FAILED = _KNOWN[Phase.FAILED]
_AS_QUEUED = _KNOWN[Phase.QUEUED]
_AS_PROCESSING = _KNOWN[Phase.PROCESSING]
_PROCESSING = Phase.PROCESSING


def classify(status: TaskStatus, table: PhaseTable) -> Classification:
    """The phase of ``status`` under ``table`` (see the module docstring for the order)."""
    text = status.task_status_text
    number = status.task_status
    norm = normalised(text) if text else ""
    if norm:
        phase = table.texts.get(norm)
        if phase is not None:
            return _KNOWN[phase]
        if norm.endswith("failed"):
            return _AS_FAILED
        if norm.startswith("queued"):
            return _AS_QUEUED if status.pre_processing_started_on is None else _AS_PROCESSING
        # An unknown text is reported even when the number places the task.
        phase = table.numbers.get(number) if number is not None else None
        return Classification(_PROCESSING if phase is None else phase, norm)
    if number is not None:
        phase = table.numbers.get(number)
        if phase is not None:
            return _KNOWN[phase]
        return Classification(_PROCESSING, str(number))
    return Classification(_PROCESSING, "none")
