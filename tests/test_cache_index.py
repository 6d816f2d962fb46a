"""The prefix trie behind QueryCache.invalidate/remove/keys, against querysync.key_matches."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from querysync import QueryKey, key_matches
from querysync.sinks._index import KeyTrie

_elements = st.sampled_from(["workflow", "w1", "w10", "w", "versions", 1, 2, None, True, 2.5])
_keys = st.lists(_elements, min_size=1, max_size=4).map(tuple)


def _trie(keys: list[QueryKey], *, split_at: int = 8192) -> KeyTrie:
    trie = KeyTrie(split_at=split_at)
    for key in keys:
        trie.add(key)
    return trie


def test_prefix_matches_whole_elements_only() -> None:
    trie = _trie([("workflow", "w1"), ("workflow", "w10"), ("workflow", "w1", "versions")])
    assert sorted(trie.matching(("workflow", "w1"))) == [
        ("workflow", "w1"),
        ("workflow", "w1", "versions"),
    ]
    assert trie.matching(("workflow", "w1"), exact=True) == [("workflow", "w1")]
    assert trie.matching(("workflow", "w")) == []
    assert len(trie.matching(())) == 3


def test_exact_on_an_inner_node_without_entry_is_empty() -> None:
    trie = _trie([("workflow", "w1", "versions")])
    assert trie.matching(("workflow", "w1"), exact=True) == []
    assert trie.matching(("workflow", "w1")) == [("workflow", "w1", "versions")]


def test_discard_prunes_and_keeps_siblings() -> None:
    trie = _trie([("a", "b", "c"), ("a", "b"), ("a", "x")])
    assert trie.discard(("a", "b", "c"))
    assert not trie.discard(("a", "b", "c"))
    assert ("a", "b") in trie
    assert trie.discard(("a", "b"))
    assert trie.matching(("a",)) == [("a", "x")]
    assert trie.discard(("a", "x"))
    assert len(trie) == 0
    assert trie._under == {}  # no empty prefix bucket is left behind


def test_add_twice_counts_once() -> None:
    trie = KeyTrie()
    assert trie.add(("jobs",))
    assert not trie.add(("jobs",))
    assert len(trie) == 1


@given(
    st.lists(_keys, max_size=30),
    st.lists(_keys, max_size=10),
    _keys,
    st.booleans(),
    st.sampled_from([8192, 2]),
)
def test_matching_equals_key_matches_scan(
    added: list[QueryKey], removed: list[QueryKey], prefix: QueryKey, exact: bool, split: int
) -> None:
    # split_at=2: the marks and every bucket of more than two keys are split in shards.
    trie = _trie(added, split_at=split)
    model = set(added)
    for key in removed:
        assert trie.discard(key) == (key in model)
        model.discard(key)
    expected = {k for k in model if key_matches(prefix, k, exact=exact)}
    found = trie.matching(prefix, exact=exact)
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert len(trie) == len(model)
    # Each key found is the object first added (1 and True are one element here, but
    # they name different rows on disk).
    first = {k: k for k in reversed(added) if k in model}
    for key in found:
        assert repr(key) == repr(first[key])
    assert trie.count_marked(0) == len(model)
    assert set(trie) == model


def test_ten_thousand_keys_leave_the_collector_next_to_nothing_to_walk() -> None:
    # Every full collection walks each tracked container; an index that costs one per
    # key stalls the event loop in proportion to the cache (a node per key did).
    gc.collect()
    before = len(gc.get_objects())
    trie = _trie(
        [(t, f"id{i}", *([] if i % 2 else ["graph"])) for i in range(5000) for t in ("a", "b")]
    )
    gc.collect()
    assert len(trie) == 10_000
    assert len(gc.get_objects()) - before < 100


def test_a_million_keys_never_grow_one_dict_past_the_split() -> None:
    # Growing a dict copies it whole in one C call holding the GIL: at a million keys,
    # read on a worker thread, that stopped the event loop for up to 700 ms.
    trie = KeyTrie(split_at=1000)
    for i in range(20_000):
        trie.add(("workflow", f"w{i}"), i % 3)
    sizes = [len(d) for d in trie._marks] if isinstance(trie._marks, list) else []
    bucket = trie._under[("workflow",)]
    assert isinstance(bucket, list)
    assert max(sizes) < 1000
    assert max(len(d) for d in bucket) < 1000
    assert len(trie.matching(("workflow",))) == 20_000
    assert trie.mark_of(("workflow", "w7")) == 1
