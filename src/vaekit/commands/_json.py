"""What every ``--json`` prints: one JSON object on one line of stdout, strict JSON (RFC 8259).

JSON has no NaN or infinity (Python's ``json`` writes them as ``NaN`` / ``Infinity``, which strict parsers
refuse): each such number is written as ``null``, and a line in the object's ``notes`` says which fields they
were, so that nothing is lost without a word.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: The most field names one note lists (the rest are counted).
NOTE_NAMES = 6


def finite(value: Any, where: str = "", replaced: list[str] | None = None) -> Any:
    """``value`` with every NaN or infinite float replaced by None, through dicts, lists and tuples; the path of
    each replaced value (``a.b[2]``) with what it was is appended to ``replaced``."""
    replaced = [] if replaced is None else replaced
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        replaced.append(f"{where or 'value'} ({value!r})")
        return None
    if isinstance(value, dict):
        return {k: finite(v, f"{where}.{k}" if where else str(k), replaced) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v, f"{where}[{i}]", replaced) for i, v in enumerate(value)]
    return value


def dumps(obj: dict[str, Any]) -> str:
    """``obj`` as strict JSON on one line: non-finite numbers as null, with a note in ``notes`` naming them."""
    replaced: list[str] = []
    clean = finite(obj, "", replaced)
    if replaced:
        shown = ", ".join(replaced[:NOTE_NAMES]) + (f" and {len(replaced) - NOTE_NAMES} more"
                                                    if len(replaced) > NOTE_NAMES else "")
        note = f"not finite numbers, written as null (JSON has no NaN or infinity): {shown}"
        notes = clean.get("notes", [])
        if isinstance(notes, list):
            clean["notes"] = [*notes, note]
        else:  # an object whose "notes" is no list of lines keeps it as it is
            clean["json_notes"] = [note]
    return json.dumps(clean, allow_nan=False)


def print_json(obj: dict[str, Any]) -> None:
    """Print ``obj`` as one line of strict JSON (:func:`dumps`) on stdout."""
    print(dumps(obj), flush=True)
