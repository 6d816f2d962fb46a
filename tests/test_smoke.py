from __future__ import annotations

from querysync.testing import change


def test_change_builds_update() -> None:
    u = change("updated", "workflow", "w1", etag="e1", name="n")
    assert u.resource.id == "w1"
    assert u.resource.etag == "e1"
    assert u.resource.model_extra == {"name": "n"}
