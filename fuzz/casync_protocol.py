"""Fuzz target for the casync protocol reader (``formats/casync_protocol.py``).

The input is a byte stream as one side of a session would receive it (the corpus holds
streams captured from casync 2, ``fixtures/casync_protocol/``). It is read by a client
(pulling chunks) and by a server (offering them), whole and in random splits: the events and
the error that ends the reading must not depend on the splits, and every message accepted
must encode back to the very bytes it came from (one encoding per message).
"""

from __future__ import annotations

from desync_ref.errors import DesyncRefError
from desync_ref.formats import casync_protocol as p


def _read(pieces: list[bytes], role: str) -> tuple[list[p.Event], bytes, str | None]:
    conn = p.Connection(role, p.PULL_CHUNKS if role == "client" else p.READABLE_STORE)
    events: list[p.Event] = []
    consumed = b""
    try:
        for piece in [*pieces, b""]:
            conn.receive_data(piece)
            while not isinstance(event := conn.next_event(), p.NeedData | p.Closed):
                events.append(event)
                if not isinstance(event, p.Abort):  # the reason text is decoded leniently
                    consumed += p.encode(event)
    except DesyncRefError as exc:
        return events, consumed, f"{type(exc).__name__}: {exc}"
    return events, consumed, None


def target_casync_protocol(data: bytes, splits: list[bytes]) -> None:
    for role in ("client", "server"):
        whole = _read([data], role)
        split = _read(splits, role)
        assert whole == split, f"{role}: protocol events depend on how the input is split"
        events, consumed, _error = whole
        if not any(isinstance(e, p.Abort) for e in events):
            assert data.startswith(consumed), f"{role}: an accepted message does not re-encode to its bytes"
