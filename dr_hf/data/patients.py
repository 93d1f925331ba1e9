"""Who each photograph belongs to: a patient id and an eye (left, right or unknown) for every row.

EyePACS names its photographs `<patient>_left` and `<patient>_right` (also `-`-separated, in any
case); a clinic's CSV may name the patient and the eye in columns (`patient_column`,
`eye_column`, found under the names of `PATIENT_COLUMNS` and `EYE_COLUMNS` when not given). A
source with neither (APTOS, IDRiD) makes each photograph its own patient, eye unknown (so does
a patient column that only repeats the image ids, as a saved APTOS set holds). Names are
read as EyePACS names only when every name of the source is one, so a source never mixes
parsed and unparsed patients.

A patient has at most one photograph of each eye; more, or an eye value that is none of
`EYE_WORDS`, is a `DataError` naming the rows. Photographs whose eye is unknown may be several.
When several sources are joined, `namespaced` prefixes each source's patient ids with its name:
patient 10 of one source is not patient 10 of another.
"""

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from dr_hf.errors import DataError, listing

LEFT, RIGHT, UNKNOWN = "left", "right", "unknown"
EYES = (LEFT, RIGHT, UNKNOWN)
PATIENT_COLUMNS = ("patient_id", "patient", "patient id", "subject_id", "subject")
EYE_COLUMNS = ("eye", "laterality", "side")
EYE_WORDS = {
    "left": LEFT,
    "l": LEFT,
    "os": LEFT,
    "right": RIGHT,
    "r": RIGHT,
    "od": RIGHT,
    "": UNKNOWN,
    "unknown": UNKNOWN,
    "u": UNKNOWN,
}
"""Eye values read (case and surrounding spaces ignored): OD and OS are right and left eye."""
_EYEPACS_NAME = re.compile(r"^(?P<patient>.+)[_-](?P<eye>left|right)$", re.IGNORECASE)

NAMES, COLUMNS, NONE = "names", "columns", "none"
"""How a source's patients were found: EyePACS-style names, CSV columns, or not at all (each
photograph its own patient)."""


@dataclass(frozen=True)
class Patients:
    """The patient id and eye of each row, and how they were found (`NAMES`, `COLUMNS`,
    `NONE`)."""

    ids: list[str]
    eyes: list[str]
    how: str

    @property
    def described(self) -> str:
        return {
            NAMES: "patients and eyes read from the image names (<patient>_left / _right)",
            COLUMNS: "patients read from the patient column",
            NONE: "no patient information: each photograph is its own patient",
        }[self.how]


def eye_from_name(image_id: str) -> tuple[str, str] | None:
    """(patient, eye) of an EyePACS-style name ("10_left", "10-RIGHT", "a_b_left"), or None."""
    match = _EYEPACS_NAME.match(str(image_id).strip())
    if match is None:
        return None
    return match["patient"], match["eye"].lower()


def parse_eyes(values: Sequence, rows: Sequence[str], where: str, column: str) -> list[str]:
    """Each value as left / right / unknown, or a DataError listing the rows that are none."""
    eyes = [EYE_WORDS.get(str(value).strip().lower()) for value in values]
    bad = [f"{row}: {value!r}" for row, value, eye in zip(rows, values, eyes) if eye is None]
    if bad:
        raise DataError(
            f"{where}: {len(bad)} row(s) of column {column!r} name no eye:\n{listing(bad)}\n"
            "Write left / right (or L / R, OS / OD), or leave the cell empty for unknown."
        )
    return eyes


def find_patients(
    image_ids: Sequence[str],
    rows: Sequence[str],
    where: str,
    patient_values: Sequence | None = None,
    eye_values: Sequence[str] | None = None,
) -> Patients:
    """The patients and eyes of a source's rows: from the given column values, else from the
    image names when every name is an EyePACS name, else each photograph its own patient.

    `eye_values` are already parsed (`parse_eyes`); an eye a column does not give is read from
    the name where the name says it. Checked with `check_patients`.
    """
    parsed = [eye_from_name(image_id) for image_id in image_ids]
    all_named = bool(parsed) and all(p is not None for p in parsed)
    if patient_values is not None:
        empty = [row for row, value in zip(rows, patient_values) if not str(value).strip()]
        if empty:
            raise DataError(
                f"{where}: empty patient id on {listing(list(empty), inline=True)}: fill it in "
                "(the same id for the photographs of one person)."
            )
        ids, how = [str(value).strip() for value in patient_values], COLUMNS
        if all(own_patients(ids, image_ids)):
            how = NONE  # a column that repeats the image ids says nothing more
    elif all_named:
        ids, how = [p[0] for p in parsed], NAMES
    else:
        ids, how = [str(image_id) for image_id in image_ids], NONE
    if eye_values is not None:
        eyes = list(eye_values)
    else:
        eyes = [p[1] if p is not None and how != NONE else UNKNOWN for p in parsed]
    check_patients(ids, eyes, rows, where)
    return Patients(ids, eyes, how)


def own_patients(patient_ids: Sequence[str], image_ids: Sequence[str]) -> list[bool]:
    """Whether each row's patient id is only its photograph's own id (the image id, or
    `<source>/<image id>` among several sources): what a source without patient information
    gives, and no evidence that two photographs of that id are of one person (IDRiD names its
    training and test photographs alike)."""
    return [
        patient == image or patient.endswith(f"/{image}")
        for patient, image in zip(map(str, patient_ids), map(str, image_ids))
    ]


def check_patients(
    patient_ids: Sequence[str], eyes: Sequence[str], rows: Sequence[str], where: str
) -> None:
    """Raise when a patient has two photographs or more of one eye (left or right), naming them."""
    seen: dict[tuple[str, str], list[str]] = defaultdict(list)
    for patient, eye, row in zip(patient_ids, eyes, rows):
        if eye != UNKNOWN:
            seen[(patient, eye)].append(row)
    doubled = [
        f"patient {patient!r}, {len(found)} photographs of the {eye} eye: {', '.join(found)}"
        for (patient, eye), found in seen.items()
        if len(found) > 1
    ]
    if doubled:
        raise DataError(
            f"{where}: {len(doubled)} patient(s) have more than one photograph of one eye:\n"
            f"{listing(doubled)}\nA patient has one left and one right eye: correct the patient "
            "or eye of these rows, or leave the eye empty (unknown) for several fields of one eye."
        )


def namespaced(patient_ids: Sequence[str], source: str) -> list[str]:
    """`<source>/<patient>`: the ids of one source among several."""
    return [f"{source}/{patient}" for patient in patient_ids]


def worse_eye_grades(patient_ids: Sequence[str], grades: Sequence[int]) -> dict[str, int]:
    """Each patient's highest grade over their photographs (the worse eye's): what a screening
    programme refers on, and what patient splits are stratified by."""
    worst: dict[str, int] = {}
    for patient, grade in zip(patient_ids, grades):
        worst[patient] = max(int(grade), worst.get(patient, -1))
    return worst


__all__ = [
    "COLUMNS",
    "EYES",
    "EYE_COLUMNS",
    "EYE_WORDS",
    "LEFT",
    "NAMES",
    "NONE",
    "PATIENT_COLUMNS",
    "RIGHT",
    "UNKNOWN",
    "Patients",
    "check_patients",
    "eye_from_name",
    "find_patients",
    "namespaced",
    "own_patients",
    "parse_eyes",
    "worse_eye_grades",
]
