"""PMap behaves like an immutable dict, and old versions stay intact."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.core.pmap import EMPTY, PMap

keys = st.one_of(st.text(max_size=6), st.integers(-2**70, 2**70))
ops = st.lists(st.tuples(st.sampled_from(["set", "update"]), st.dictionaries(keys, st.integers(), max_size=5)),
               max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_pmap_matches_a_dict_and_keeps_old_versions(operations):
    pmap, model, versions = EMPTY, {}, []
    for op, changes in operations:
        versions.append((pmap, dict(model)))
        if op == "set":
            for key, value in changes.items():
                pmap = pmap.set(key, value)
        else:
            pmap = pmap.update(changes)
        model.update(changes)
        assert dict(pmap.items()) == model and len(pmap) == len(model)
        assert all(pmap[k] == v and k in pmap for k, v in model.items())
    for old, snapshot in versions:
        assert dict(old.items()) == snapshot and len(old) == len(snapshot)


@given(st.dictionaries(keys, st.integers(), max_size=50))
def test_from_items_equals_repeated_set(model):
    built = EMPTY
    for key, value in model.items():
        built = built.set(key, value)
    assert PMap.from_items(model.items()) == built == model
    assert sorted(map(repr, PMap.from_items(model.items()))) == sorted(map(repr, model))


def test_missing_keys():
    pmap = EMPTY.set("a", 1)
    assert pmap.get("b") is None and pmap.get("b", 2) == 2 and "b" not in pmap
    try:
        pmap["b"]
    except KeyError:
        pass
    else:
        raise AssertionError("missing key did not raise")
