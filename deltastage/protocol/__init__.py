"""The agent protocol, sans-I/O: bytes in, events out; events in, bytes out.

``frames`` cuts the byte stream into typed frames, ``events`` defines the messages and their
payload codecs, ``connection`` holds the state table that says who may send what, when.
"""

from __future__ import annotations

from deltastage.protocol.connection import EOF, NEED_DATA, Connection, Role, Sentinel, State
from deltastage.protocol.events import (
    CAPABILITIES,
    DEFAULT_INDICATOR,
    MAX_PATH,
    PROTOCOL_VERSION,
    REFINE_MIN_BLOCK,
    Bye,
    Cancel,
    DeltaData,
    DeltaEnd,
    Error,
    ErrorCode,
    Event,
    Fetch,
    FetchMany,
    Hello,
    HelloReply,
    IndicatorQuery,
    IndicatorState,
    IndicatorWrite,
    ListBatch,
    ListEnd,
    ListRequest,
    Ok,
    RefineReply,
    RefineRequest,
    SigData,
    SigEnd,
    WireEntry,
)
from deltastage.protocol.frames import MAX_FRAME

__all__ = [
    "CAPABILITIES",
    "DEFAULT_INDICATOR",
    "EOF",
    "MAX_FRAME",
    "MAX_PATH",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "REFINE_MIN_BLOCK",
    "Bye",
    "Cancel",
    "Connection",
    "DeltaData",
    "DeltaEnd",
    "Error",
    "ErrorCode",
    "Event",
    "Fetch",
    "FetchMany",
    "Hello",
    "HelloReply",
    "IndicatorQuery",
    "IndicatorState",
    "IndicatorWrite",
    "ListBatch",
    "ListEnd",
    "ListRequest",
    "Ok",
    "RefineReply",
    "RefineRequest",
    "Role",
    "Sentinel",
    "SigData",
    "SigEnd",
    "State",
    "WireEntry",
]
