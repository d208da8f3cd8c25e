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


def slots_constructor(cls: type):
    """A function that builds `cls` (a dataclass with __slots__) as cls(...) does, taking the same
    arguments, but stores each field through its slot's descriptor instead of the frozen
    object.__setattr__ (about a quarter of the cost); `cls` itself where that would differ (no
    slots, a __post_init__, a field outside __init__ or with a default factory)."""
    params = getattr(cls, "__dataclass_params__", None)
    if (params is None or not params.init or hasattr(cls, "__post_init__") or "__slots__" not in cls.__dict__
            or cls.__new__ is not object.__new__):
        return cls
    env: dict = {"_plain_new": new, "_plain_cls": cls}
    arguments, body = [], []
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.init or f._field_type is not dataclasses._FIELD or f.default_factory is not dataclasses.MISSING:
            return cls
        if f.default is dataclasses.MISSING:
            arguments.append(f.name)
        else:
            env[f"_plain_default{i}"] = f.default
            arguments.append(f"{f.name}=_plain_default{i}")
        env[f"_plain_set{i}"] = cls.__dict__[f.name].__set__
        body.append(f"    _plain_set{i}(_plain_obj, {f.name})")
    source = (f"def build({', '.join(arguments)}):\n    _plain_obj = _plain_new(_plain_cls)\n" + "\n".join(body)
              + "\n    return _plain_obj\n")
    exec(source, env)  # noqa: S102 - generated from the dataclass's own fields only
    build = env["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build
