"""Errors raised by the wire contracts.

Every parse failure at the edge raises :class:`ProtocolError`; callers map its ``close_code``
to a WebSocket close code or an HTTP 4xx answer.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """A message from Exotel (or an HTTP callback) that does not follow the protocol.

    ``close_code`` is the WebSocket close code that fits the fault: 1003 for a message of the
    wrong kind (binary frame), 1007 for data that is not what it claims to be (bad JSON, bad
    base64, wrong types), 1008 for a policy violation (event out of order), 1009 for a message
    that is too big. ``retriable`` is always False: the same bytes will fail again.
    """

    retriable = False

    def __init__(self, message: str, *, close_code: int = 1007) -> None:
        super().__init__(message)
        self.reason = message
        self.close_code = close_code
