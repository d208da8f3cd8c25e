"""Building frozen dataclasses without their generated __init__, where thousands are built per batch.

A frozen dataclass's __init__ stores each field through object.__setattr__; the monitor's fold,
its publisher and the Kafka consumer build one or more objects per event. Where a class only
stores its fields, filling __dict__ directly (``new(cls)`` then ``set_attr(obj, "__dict__", {...})``)
builds the same object. Each caller checks once, at import, that the class still has that shape
and exactly the fields it fills (``has_plain_fields``), and uses the constructor otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

new = object.__new__
set_attr = object.__setattr__


def plain_construction(cls: type) -> bool:
    """Whether filling __dict__ directly builds the same object as cls(**fields) would:
    a dataclass whose __init__ only stores its fields (no __post_init__, no slots, no __new__)."""
    params = getattr(cls, "__dataclass_params__", None)
    return (params is not None and params.init and not hasattr(cls, "__post_init__")
            and "__slots__" not in cls.__dict__ and cls.__new__ is object.__new__
            and all(f.init and f._field_type is dataclasses._FIELD for f in dataclasses.fields(cls)))


def has_plain_fields(cls: type, names: Sequence[str]) -> bool:
    """plain_construction(cls), and its fields are exactly `names`, in order: what a caller that
    fills __dict__ by hand writes, so a field added to the class sends it back to the constructor."""
    return plain_construction(cls) and [f.name for f in dataclasses.fields(cls)] == list(names)
