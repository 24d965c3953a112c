"""Model release signatures (issue 15 part 2, "Models"): ``model.signing``, ``export``/``models promote
--sign-key``, ``models keygen``, and a station whose policy trusts keys refusing every model that is not signed by
one of them over these very bytes — through the Inspector and through the real ``parcelscan inspect``.

Every key here is a throwaway made in the test (``tmp_path``); no key file is in the repository.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from parcelscan.cli import main
from parcelscan.errors import ParcelscanError
from parcelscan.inference.inspector import Inspector
from parcelscan.inference.policy import DEFAULT_POLICY_PATH, load_policy
from parcelscan.model.registry import SHIPPED_DEFAULT, Registry
from parcelscan.model.session import open_session, read_metadata, write_sha256
from parcelscan.model.signing import (
    load_private_key,
    public_key_hex,
    read_signature,
    sign_model,
    signature_path,
    signed_message,
    verify_model_signature,
)

sys.path.insert(0, str(Path(__file__).parent))
import inspect_helpers as helpers

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "scans"
SAMPLE = EXAMPLES / "sim31-000077_low.png"


def _key_file(directory: Path, name: str = "release") -> tuple[Path, Ed25519PrivateKey]:
    """A throwaway PEM private key, mode 0600."""
    key = Ed25519PrivateKey.generate()
    path = directory / f"{name}.key"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path, key


def _model_copy(directory: Path, name: str = "model.onnx") -> Path:
    """The shipped dual-energy model and its .sha256, copied (the shipped files stay unsigned)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    shutil.copyfile(SHIPPED_DEFAULT, target)
    write_sha256(target)
    return target


def _policy(directory: Path, keys: list[str]) -> Path:
    """The shipped policy with ``trusted_public_keys`` set (every other line as shipped)."""
    text = DEFAULT_POLICY_PATH.read_text()
    assert "trusted_public_keys = []" in text
    path = directory / "station.toml"
    path.write_text(text.replace("trusted_public_keys = []", f"trusted_public_keys = {json.dumps(keys)}"))
    return path


def _sign(model: Path, key: Ed25519PrivateKey) -> None:
    meta = read_metadata(model)
    sign_model(model, key, meta.name, meta.version)


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A signed copy of the shipped model, its key and a policy that trusts the key."""
    root = tmp_path_factory.mktemp("signed")
    key_path, key = _key_file(root)
    model = _model_copy(root / "release")
    _sign(model, key)
    return {"root": root, "model": model, "key": key, "key_path": key_path,
            "policy": load_policy(_policy(root, [public_key_hex(key)]))}


# --- the signature file -------------------------------------------------------------------------------------------
def test_the_signature_covers_the_bytes_name_and_version(signed):
    sig = read_signature(signed["model"])
    meta = read_metadata(signed["model"])
    assert sig.key_id == public_key_hex(signed["key"]) and len(sig.key_id) == 64
    assert (sig.name, sig.version, sig.model) == (meta.name, meta.version, "model.onnx")
    assert sig.sha256 == signed["model"].with_name("model.onnx.sha256").read_text().split()[0]
    data = json.loads(signature_path(signed["model"]).read_text())
    assert data["format"] == "parcelscan-model-signature/1" and data["algorithm"] == "ed25519"
    # the signature verifies over the documented message, with nothing but the public key
    signed["key"].public_key().verify(bytes.fromhex(sig.signature), signed_message(sig.sha256, sig.name, sig.version))
    assert verify_model_signature(signed["model"], [sig.key_id.upper()]).key_id == sig.key_id  # hex in any case


def test_keys_load_raw_and_pem_and_a_readable_private_key_is_refused(tmp_path):
    key = Ed25519PrivateKey.generate()
    raw = tmp_path / "raw.key"
    raw.write_bytes(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()))
    raw.chmod(0o600)
    assert public_key_hex(load_private_key(raw)) == public_key_hex(key)
    pem, pem_key = _key_file(tmp_path, "pem")
    assert public_key_hex(load_private_key(pem)) == public_key_hex(pem_key)
    pem.chmod(0o644)
    with pytest.raises(ParcelscanError, match="group or others may read it"):
        load_private_key(pem)
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"not a key at all, not 32 bytes")
    junk.chmod(0o600)
    with pytest.raises(ParcelscanError, match="not an Ed25519 private key"):
        load_private_key(junk)


# --- the station: accepted and refused ----------------------------------------------------------------------------
def test_a_signed_model_by_a_trusted_key_is_accepted(signed):
    inspector = Inspector(signed["model"], policy=signed["policy"], threads=1)
    assert inspector.session.signature.key_id == public_key_hex(signed["key"])
    verdict = inspector.inspect(SAMPLE)
    assert verdict.verdict in ("clear", "suspect") and verdict.score is not None


def test_an_unsigned_model_is_refused(signed, tmp_path):
    unsigned = _model_copy(tmp_path)
    with pytest.raises(ParcelscanError, match=r"refusing an unsigned model: model.onnx.sig is missing"):
        Inspector(unsigned, policy=signed["policy"])
    # without trusted keys, the same model is the .sha256 integrity check's business only
    assert Inspector(unsigned, threads=1).session.signature is None


def test_a_model_signed_by_another_key_is_refused(signed, tmp_path):
    model = _model_copy(tmp_path)
    _sign(model, Ed25519PrivateKey.generate())
    with pytest.raises(ParcelscanError, match="which this station's policy does not trust"):
        Inspector(model, policy=signed["policy"])


def test_changed_bytes_with_a_recomputed_sha256_are_refused(signed, tmp_path):
    """The attack the .sha256 cannot stop: change the model, write a fresh .sha256, keep the old .sig."""
    model = _model_copy(tmp_path)
    shutil.copyfile(signature_path(signed["model"]), signature_path(model))
    verify_model_signature(model, signed["policy"].trusted_public_keys)  # the copy is the signed bytes
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    model.write_bytes(bytes(blob))
    write_sha256(model)  # integrity check satisfied
    with pytest.raises(ParcelscanError, match="changed after it was signed"):
        Inspector(model, policy=signed["policy"])


def test_an_altered_signature_file_is_refused(signed, tmp_path):
    model = _model_copy(tmp_path)
    data = json.loads(signature_path(signed["model"]).read_text())
    for field, value, words in (("version", "9.9.9", "does not verify"),
                                ("signature", "00" * 64, "does not verify"),
                                ("signature", "zz", "not a model signature file|must be 64")):
        signature_path(model).write_text(json.dumps({**data, field: value}))
        with pytest.raises(ParcelscanError, match=words):
            Inspector(model, policy=signed["policy"])


def test_a_signature_made_under_another_name_is_refused_after_loading(signed, tmp_path):
    """A valid signature over these bytes, but for a name the model's metadata does not carry."""
    model = _model_copy(tmp_path)
    sign_model(model, signed["key"], "some-other-model", "1.0")
    with pytest.raises(ParcelscanError, match=r"but was signed as some-other-model 1\.0"):
        open_session(model, device="cpu", trusted_keys=signed["policy"].trusted_public_keys)


def test_inspect_cli_with_a_trusting_policy(signed, tmp_path, capsys):
    policy = _policy(tmp_path, [public_key_hex(signed["key"])])
    code = main(["inspect", str(EXAMPLES), "--policy", str(policy), "--model", str(signed["model"]), "--threads", "1"])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert code in (0, 1, 2) and len(lines) == len(list(EXAMPLES.glob("*_low.png")))
    assert f"model signed by trusted key {public_key_hex(signed['key'])[:16]}" in err
    assert "trusted model keys: 1 (" in err
    # the same policy, an unsigned model: one line on stderr, exit 2, and not one verdict
    unsigned = _model_copy(tmp_path / "unsigned")
    code = main(["inspect", str(EXAMPLES), "--policy", str(policy), "--model", str(unsigned)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "refusing an unsigned model" in err and err.startswith("parcelscan inspect: error")


# --- making keys and signatures: keygen, promote, export ----------------------------------------------------------
def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path, capsys):
    assert main(["models", "keygen", "--out", str(tmp_path / "keys")]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "keys" / "parcelscan-release.key", tmp_path / "keys" / "parcelscan-release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key_id = public.read_text().strip()
    assert public_key_hex(load_private_key(private)) == key_id and key_id in out
    assert main(["models", "keygen", "--out", str(tmp_path / "keys")]) == 2  # never overwrites a key
    assert "refusing to overwrite" in capsys.readouterr().err
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    assert main(["models", "keygen", "--out", str(repo / "keys")]) == 2
    assert "inside the git working tree" in capsys.readouterr().err and not (repo / "keys").exists()


def test_promote_signs_the_stored_model_and_register_keeps_a_signature(signed, tmp_path, capsys):
    registry_dir = tmp_path / "registry"
    assert main(["models", "--registry", str(registry_dir), "register", str(_model_copy(tmp_path / "a"))]) == 0
    registry = Registry(registry_dir)
    entry = registry.entries()[0]
    stored = registry.resolve_path(entry)
    assert not signature_path(stored).exists()
    capsys.readouterr()
    code = main(["models", "--registry", str(registry_dir), "promote", entry.model_id, "--force", "--reason",
                 "signing test", "--sign-key", str(signed["key_path"])])
    assert code == 0 and f"signed by Ed25519 key {public_key_hex(signed['key'])}" in capsys.readouterr().out
    assert registry.load()["history"][-1]["signed_by"] == public_key_hex(signed["key"])
    assert Inspector(stored, policy=signed["policy"], threads=1).session.signature is not None
    # a signed release registered elsewhere keeps its signature (it covers the bytes, not the path)
    other = Registry(tmp_path / "other")
    copied = other.register(signed["model"], name="signed")
    assert verify_model_signature(other.resolve_path(copied), signed["policy"].trusted_public_keys)


def test_promote_with_an_unreadable_key_changes_nothing(tmp_path, capsys):
    registry_dir = tmp_path / "registry"
    assert main(["models", "--registry", str(registry_dir), "register", str(_model_copy(tmp_path / "a"))]) == 0
    model_id = Registry(registry_dir).entries()[0].model_id
    loose, _ = _key_file(tmp_path)
    loose.chmod(0o640)
    assert main(["models", "--registry", str(registry_dir), "promote", model_id, "--force", "--reason", "x",
                 "--sign-key", str(loose)]) == 2
    assert "group or others may read it" in capsys.readouterr().err
    assert Registry(registry_dir).load()["current"] is None


def test_export_signs_the_model_it_writes(signed, tmp_path, capsys):
    pytest.importorskip("torch")
    built = helpers.build_all(tmp_path / "built")
    out = tmp_path / "exported.onnx"
    code = main(["export", "--checkpoint", str(built["checkpoint"]), "--out", str(out), "--data", str(built["scans"]),
                 "--sign-key", str(signed["key_path"])])
    stdout = capsys.readouterr().out
    assert code == 0 and f"signed by Ed25519 key {public_key_hex(signed['key'])}" in stdout
    sig = verify_model_signature(out, signed["policy"].trusted_public_keys)
    meta = read_metadata(out)
    assert (sig.name, sig.version) == (meta.name, meta.version)
    assert main(["export", "--show", str(out)]) == 0
    assert f"signature:        Ed25519 key {sig.key_id} (valid" in capsys.readouterr().out


# --- the station install without the [signing] extra --------------------------------------------------------------
_NO_CRYPTOGRAPHY = """
import importlib.abc, sys
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cryptography":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: station install)", name=name)
sys.meta_path.insert(0, _NotInstalled())
from parcelscan.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_the_signing_extra_a_keyless_station_runs_and_a_trusting_one_refuses_to_start(signed, tmp_path):
    """cryptography is the [signing] extra (18 MiB the plain station install cannot afford): a station that trusts
    no key never imports it; one whose policy names keys fails closed, with the install advice, before any verdict."""
    sample = str(EXAMPLES / "sim31-000077_low.png")
    plain = subprocess.run([sys.executable, "-c", _NO_CRYPTOGRAPHY, "inspect", sample, "--threads", "1"],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode in (0, 1) and len(plain.stdout.splitlines()) == 1, plain.stderr[-2000:]
    policy = _policy(tmp_path, [public_key_hex(signed["key"])])
    trusting = subprocess.run([sys.executable, "-c", _NO_CRYPTOGRAPHY, "inspect", sample, "--policy", str(policy),
                               "--model", str(signed["model"])], capture_output=True, text=True, timeout=300)
    assert trusting.returncode == 2 and trusting.stdout == "" and "Traceback" not in trusting.stderr
    assert "pip install 'parcelscan[signing]'" in trusting.stderr
