"""The model registry: versions, the promotion gate, forced promotions, rollback, the default model."""

from __future__ import annotations

import json

import pytest

from parcelscan.errors import ParcelscanError
from parcelscan.model.registry import SHIPPED_DEFAULT, Registry, default_model_path


def _comparison(base, base_orig, cand_orig, base_new, cand_new, base_pfa=0.01, cand_pfa=0.01):
    return {"base": base, "original_test": {"base_pd": base_orig, "candidate_pd": cand_orig, "base_pfa": base_pfa,
                                            "candidate_pfa": cand_pfa},
            "new_holdout": {"base_pd": base_new, "candidate_pd": cand_new}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("PARCELSCAN_MODEL_DIR", str(tmp_path / "store"))
    model_file = tmp_path / "m.onnx"
    model_file.write_bytes(b"not really onnx, the registry only copies and hashes it")
    return Registry(), model_file


def test_register_increments_versions_and_hashes(store):
    registry, model_file = store
    first = registry.register(model_file, "dual")
    second = registry.register(model_file, "dual", parent=first.model_id)
    assert (first.model_id, second.model_id) == ("dual@1", "dual@2")
    assert second.parent == "dual@1"
    assert registry.resolve_path(second).read_bytes() == model_file.read_bytes()
    assert (registry.resolve_path(second).parent / "m.onnx.sha256").read_text().startswith(second.sha256)
    with pytest.raises(ParcelscanError, match="parent"):
        registry.register(model_file, "dual", parent="ghost@9")


def test_promotion_gate(store):
    registry, model_file = store
    base = registry.register(model_file, "dual", comparison=_comparison(None, 0.97, 0.97, 0.5, 0.9))
    registry.promote(base.model_id)
    worse = registry.register(model_file, "dual", parent=base.model_id,
                              comparison=_comparison(base.model_id, 0.970, 0.960, 0.50, 0.95))
    with pytest.raises(ParcelscanError, match=r"loses 1\.00 points"):
        registry.promote(worse.model_id)
    no_gain = registry.register(model_file, "dual", parent=base.model_id,
                                comparison=_comparison(base.model_id, 0.970, 0.968, 0.50, 0.50))
    with pytest.raises(ParcelscanError, match="does not improve"):
        registry.promote(no_gain.model_id)
    good = registry.register(model_file, "dual", parent=base.model_id,
                             comparison=_comparison(base.model_id, 0.970, 0.966, 0.50, 0.93))
    registry.promote(good.model_id)
    assert registry.current().model_id == good.model_id


def test_forced_promotion_needs_and_records_a_reason(store):
    registry, model_file = store
    entry = registry.register(model_file, "dual")
    with pytest.raises(ParcelscanError, match="no retraining comparison"):
        registry.promote(entry.model_id)
    with pytest.raises(ParcelscanError, match="needs --reason"):
        registry.promote(entry.model_id, force=True)
    registry.promote(entry.model_id, force=True, reason="first field model", user="alice")
    history = registry.load()["history"]
    assert history[-1]["forced"] and history[-1]["reason"] == "first field model" and history[-1]["by"] == "alice"


def test_rollback_and_default_model_path(store):
    registry, model_file = store
    assert default_model_path() == SHIPPED_DEFAULT
    a = registry.register(model_file, "dual")
    registry.promote(a.model_id, force=True, reason="bootstrap")
    b = registry.register(model_file, "dual", parent=a.model_id,
                          comparison=_comparison(a.model_id, 0.97, 0.97, 0.4, 0.8))
    registry.promote(b.model_id)
    assert default_model_path() == registry.resolve_path(b)
    assert registry.rollback(reason="field complaints") == a.model_id
    assert default_model_path() == registry.resolve_path(a)
    assert registry.rollback() is None
    assert default_model_path() == SHIPPED_DEFAULT
    with pytest.raises(ParcelscanError, match="nothing to roll back"):
        registry.rollback()
    json.loads(registry.path.read_text())  # still valid JSON after every change


def test_models_register_cli_registers_the_shipped_default(tmp_path, capsys):
    """`parcelscan models register` through the real CLI, with and without --checkpoint (issue 11 item 3: it
    crashed on ``ModelMetadata.get``); the entry carries the model file's own metadata."""
    from parcelscan.cli import main as cli
    from parcelscan.model.session import read_metadata

    store = tmp_path / "store"
    assert cli(["models", "--registry", str(store), "register", str(SHIPPED_DEFAULT)]) == 0
    registry = Registry(store)
    (entry,) = registry.entries()
    meta = read_metadata(SHIPPED_DEFAULT)
    assert entry.name == meta.name and entry.input_kind == meta.input_kind == "dual_energy"
    assert entry.data_fingerprint == meta.data_fingerprint and entry.created == meta.created
    assert entry.metrics == meta.metrics and entry.checkpoint is None
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"the registry copies a checkpoint as it is")
    assert cli(["models", "--registry", str(store), "register", str(SHIPPED_DEFAULT), "--checkpoint", str(checkpoint),
                "--parent", entry.model_id]) == 0
    second = registry.get(f"{meta.name}@2")
    assert second.parent == entry.model_id
    assert (store / second.checkpoint).read_bytes() == checkpoint.read_bytes()
    assert f"registered {meta.name}@2" in capsys.readouterr().out
