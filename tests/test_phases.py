"""Tables for watchdog.phases: status text and number -> phase, and what counts as unknown."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from watchdog.models import Phase, TaskStatus
from watchdog.phases import Classification, PhaseTable, classify, normalised
from watchdog.settings import PhasesSettings

CREATED = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
STARTED = datetime(2026, 11, 28, 10, 5, tzinfo=UTC)
DEFAULT = PhaseTable.build()

Q = Phase.QUEUED
P = Phase.PROCESSING
R = Phase.REVIEW
D = Phase.DONE
F = Phase.FAILED


def make_status(
    text: str | None, number: int | None = None, started: datetime | None = None
) -> TaskStatus:
    """A status object with only the fields classification reads."""
    return TaskStatus(
        task_id=44,
        created_on=CREATED,
        task_status=number,
        task_status_text=text,
        pre_processing_started_on=started,
    )


@pytest.mark.parametrize(
    ("text", "phase"),
    [
        ("Processed", D),
        ("ExportCompleted", D),
        ("Deleted", D),
        ("Deleting", D),
        ("Archived", D),
        ("Completed", D),
        ("InReview", R),
        ("ToReview", R),
        ("PendingReview", R),
        ("PreProcessingFailed", F),
        ("PreProcessingDownloadFailed", F),
        ("PreProcessingGetPagesFailed", F),
        ("QueuedForPreProcessing", Q),
        ("PreProcessingInProgress", P),
        ("PreProcessingSuccessful", P),
    ],
)
@pytest.mark.parametrize("started", [None, STARTED], ids=["not-started", "started"])
def test_default_texts(text: str, phase: Phase, started: datetime | None) -> None:
    """Every text of the default table maps to its phase, whether or not pre-processing began."""
    assert classify(make_status(text, None, started), DEFAULT) == Classification(phase, None)


@pytest.mark.parametrize(
    ("number", "phase"),
    [(19, D), (20, D), (30, Q), (31, P), (32, F), (33, F), (34, P), (35, F)],
)
def test_default_numbers_without_text(number: int, phase: Phase) -> None:
    """Without a text, every documented TaskStatus number maps to its phase and is known."""
    assert classify(make_status(None, number), DEFAULT) == Classification(phase, None)


@pytest.mark.parametrize(
    ("text", "phase"),
    [
        ("To Review", R),
        ("to_review", R),
        ("IN-REVIEW", R),
        ("in review", R),
        ("Pending  Review", R),
        ("pending_-_review", R),
        ("PROCESSED", D),
        ("export-completed", D),
        ("Export Completed", D),
        (" Processed\n", D),
        ("Pre Processing In Progress", P),
        ("pre_processing_successful", P),
        ("queued-for-pre-processing", Q),
        ("QUEUED FOR PREPROCESSING", Q),
    ],
)
def test_text_variants(text: str, phase: Phase) -> None:
    """Texts compare case-insensitively, ignoring spaces, underscores and hyphens."""
    assert classify(make_status(text), DEFAULT) == Classification(phase, None)


@pytest.mark.parametrize(
    "text",
    [
        "RecognitionFailed",
        "ExportFailed",
        "export_failed",
        "Integration Failed",
        "FAILED",
        "Failed",
        "QueuedFailed",
    ],
)
def test_any_text_ending_in_failed_is_failed(text: str) -> None:
    """A text ending in "Failed" is phase failed, and known, even when not listed anywhere."""
    assert classify(make_status(text, 31, STARTED), DEFAULT) == Classification(F, None)


@pytest.mark.parametrize(
    ("text", "started", "phase"),
    [
        ("QueuedForRecognition", None, Q),
        ("QueuedForRecognition", STARTED, P),
        ("Queued", None, Q),
        ("Queued", STARTED, P),
        ("queued for export", None, Q),
        ("queued_for_export", STARTED, P),
        ("QueuedForPreProcessing", None, Q),
        ("QueuedForPreProcessing", STARTED, Q),
    ],
)
def test_queued_texts_before_and_after_pre_processing(
    text: str, started: datetime | None, phase: Phase
) -> None:
    """Queued… is queued until pre-processing starts, then processing; the exact entry stays."""
    assert classify(make_status(text, None, started), DEFAULT) == Classification(phase, None)


@pytest.mark.parametrize(
    ("text", "number", "phase", "unknown"),
    [
        ("Recognizing", 31, P, "recognizing"),
        ("Recognizing", 30, Q, "recognizing"),
        ("Recognizing", 19, D, "recognizing"),
        ("Some Mystery", 32, F, "somemystery"),
        ("Recognizing", 36, P, "recognizing"),
        ("Recognizing", 4, P, "recognizing"),
        ("Recognizing", None, P, "recognizing"),
        ("IN_RECOGNITION", None, P, "inrecognition"),
    ],
)
def test_unknown_text(text: str, number: int | None, phase: Phase, unknown: str) -> None:
    """An unknown text is reported (normalised); a known number decides, else processing."""
    assert classify(make_status(text, number), DEFAULT) == Classification(phase, unknown)


@pytest.mark.parametrize(
    ("text", "number", "phase", "unknown"),
    [
        (None, 36, P, "36"),
        (None, 4, P, "4"),
        (None, 0, P, "0"),
        (None, None, P, "none"),
        ("", 30, Q, None),
        ("", 20, D, None),
        ("", 99, P, "99"),
        ("", None, P, "none"),
        (" ", 32, F, None),
        ("-_ ", None, P, "none"),
    ],
)
def test_missing_text(
    text: str | None, number: int | None, phase: Phase, unknown: str | None
) -> None:
    """With no (or an empty) text the number decides; an unknown number is reported as itself."""
    assert classify(make_status(text, number), DEFAULT) == Classification(phase, unknown)


@pytest.mark.parametrize(
    ("text", "number", "phase"),
    [
        ("Processed", 31, D),
        ("InReview", 32, R),
        ("PreProcessingInProgress", 20, P),
        ("QueuedForPreProcessing", 35, Q),
        ("PreProcessingFailed", 19, F),
    ],
)
def test_text_wins_over_number(text: str, number: int, phase: Phase) -> None:
    """A known text decides the phase even when the number says otherwise."""
    assert classify(make_status(text, number), DEFAULT) == Classification(phase, None)


def test_api_documentation_example() -> None:
    """The API docs' example (taskStatus 4, "InReview") is review: the text beats the number."""
    status = TaskStatus(
        task_id=44,
        workspace_id=1,
        batch_id=1,
        task_number=1,
        external_id=None,
        display_name="Task display name",
        description="Task description",
        created_on=datetime(2022, 3, 16, 16, 59, 55, tzinfo=UTC),
        task_status=4,
        integration_status=4,
        task_status_text="InReview",
        integration_status_text="Failed",
        total_pages=10,
        restart_count=2,
        pre_processing_started_on=datetime(2022, 3, 16, 16, 59, 55, tzinfo=UTC),
    )
    assert classify(status, DEFAULT) == Classification(R, None)


EXTENDED = PhaseTable.build(
    PhasesSettings(
        done=["MyStatus", 99],
        review=["Awaiting Approval", 98],
        failed=["Stalled", 97],
        queued=["Waiting", 96],
        processing=["Recognizing", 36, 4],
    )
)


@pytest.mark.parametrize(
    ("text", "number", "started", "phase"),
    [
        ("MyStatus", None, None, D),
        ("my_status", 31, STARTED, D),
        (None, 99, None, D),
        ("awaiting-approval", None, None, R),
        (None, 98, None, R),
        ("STALLED", None, None, F),
        (None, 97, None, F),
        ("Waiting", None, STARTED, Q),
        (None, 96, None, Q),
        ("Recognizing", 19, None, P),
        (None, 36, None, P),
        (None, 4, None, P),
        ("Processed", None, None, D),
        (None, 30, None, Q),
    ],
)
def test_phases_extension(
    text: str | None, number: int | None, started: datetime | None, phase: Phase
) -> None:
    """[phases] texts (normalised) and numbers join the table, and the defaults stay."""
    assert classify(make_status(text, number, started), EXTENDED) == Classification(phase, None)


@pytest.mark.parametrize(
    ("extra", "text", "number", "started", "phase"),
    [
        (PhasesSettings(processing=["Processed"]), "Processed", None, None, P),
        (PhasesSettings(review=["export completed"]), "ExportCompleted", 20, None, R),
        (PhasesSettings(failed=[31]), None, 31, None, F),
        (PhasesSettings(done=[35]), None, 35, None, D),
        (PhasesSettings(done=["ExportFailed"]), "ExportFailed", None, None, D),
        (PhasesSettings(review=["QueuedForReview"]), "QueuedForReview", None, STARTED, R),
        (
            PhasesSettings(processing=["QueuedForPreProcessing"]),
            "QueuedForPreProcessing",
            30,
            None,
            P,
        ),
    ],
)
def test_phases_extension_overrides_default(
    extra: PhasesSettings,
    text: str | None,
    number: int | None,
    started: datetime | None,
    phase: Phase,
) -> None:
    """A [phases] entry overrides a default row, the Failed suffix and the Queued prefix."""
    table = PhaseTable.build(extra)
    assert classify(make_status(text, number, started), table) == Classification(phase, None)


def test_unknown_text_with_extension_number() -> None:
    """An unknown text is still reported when a [phases] number decides the phase."""
    assert classify(make_status("Brand New", 99), EXTENDED) == Classification(D, "brandnew")


def test_build_without_extra_equals_empty_extension() -> None:
    """An empty [phases] section yields exactly the default table."""
    empty = PhaseTable.build(PhasesSettings())
    assert dict(empty.texts) == dict(DEFAULT.texts)
    assert dict(empty.numbers) == dict(DEFAULT.numbers)


def test_build_does_not_leak_between_tables() -> None:
    """Building an extended table leaves later default tables untouched."""
    PhaseTable.build(PhasesSettings(done=["Leaky", 77], processing=["Processed"]))
    fresh = PhaseTable.build()
    assert "leaky" not in fresh.texts
    assert 77 not in fresh.numbers
    assert fresh.texts["processed"] is D


def test_default_table_contents() -> None:
    """The default table holds PRODUCT.md's texts (normalised) and numbers, nothing else."""
    assert dict(DEFAULT.texts) == {
        "processed": D,
        "exportcompleted": D,
        "deleted": D,
        "deleting": D,
        "archived": D,
        "completed": D,
        "inreview": R,
        "toreview": R,
        "pendingreview": R,
        "queuedforpreprocessing": Q,
        "preprocessinginprogress": P,
        "preprocessingsuccessful": P,
    }
    assert dict(DEFAULT.numbers) == {19: D, 20: D, 30: Q, 31: P, 32: F, 33: F, 34: P, 35: F}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("To Review", "toreview"),
        ("to_review", "toreview"),
        ("IN-REVIEW", "inreview"),
        ("\tPre Processing\n", "preprocessing"),
        ("", ""),
    ],
)
def test_normalised(text: str, expected: str) -> None:
    """The cached normaliser agrees with the contract's comparison rule."""
    assert normalised(text) == expected


def test_normalised_cache_is_bounded() -> None:
    """The normalisation cache has a size limit, so odd texts cannot grow memory forever."""
    maxsize = normalised.cache_parameters()["maxsize"]
    assert isinstance(maxsize, int)
    assert 0 < maxsize <= 100_000


def test_known_classifications_are_shared() -> None:
    """Known statuses reuse one Classification per phase (the hot path allocates nothing)."""
    first = classify(make_status("InReview"), DEFAULT)
    second = classify(make_status("To Review"), DEFAULT)
    assert first is second
