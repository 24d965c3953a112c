"""Model release signatures (Ed25519): who released a model file, not only whether it arrived whole.

The ``<model>.onnx.sha256`` beside a model is an integrity check: it catches a torn copy, but whoever can change
the model can recompute it. A station whose policy names trusted public keys (``[models] trusted_public_keys``,
``inference.policy``) therefore also demands ``<model>.onnx.sig``, written by ``parcelscan export --sign-key`` or
``parcelscan models promote --sign-key`` with a private key that lives with the release manager, never in the
repository (``parcelscan models keygen --out DIR`` makes a pair; tests make throwaway ones).

**The signature file** (``<model>.onnx.sig``, UTF-8 JSON, one object)::

    {"format": "parcelscan-model-signature/1", "algorithm": "ed25519",
     "key_id": "<the signer's raw 32-byte public key, 64 hex digits>",
     "model": "<file name>", "name": "<metadata name>", "version": "<metadata version>",
     "sha256": "<sha256 of the .onnx bytes, 64 hex>", "signed_at": "<ISO 8601 UTC>",
     "signature": "<Ed25519 signature, 128 hex digits>"}

**What is signed** (``signed_message``): the canonical JSON (sorted keys, no spaces) of ``format``, ``sha256``,
``name`` and ``version`` — the model's bytes (through their sha256) and what it claims to be. ``model`` (the file
name) and ``signed_at`` are informative only: a signed model may be renamed or copied into a registry.

**Verification** (``verify_model_signature``) refuses, each with one line that says why: a missing ``.sig`` (an
unsigned model), a ``.sig`` that cannot be read, a signer whose key the policy does not trust, model bytes whose
sha256 is not the signed one (a modified model with a recomputed ``.sha256``), and a signature that does not
verify. The station then checks that the loaded model's metadata name and version are the signed ones
(``model.session.open_session``).

**Keys**: a private key file is raw (32 bytes) or PEM (PKCS#8, ``-----BEGIN PRIVATE KEY-----``, unencrypted);
one readable by group or others is refused, as ssh refuses one (a key others can read is not private). A public
key is named by its 64 hex digits, which are also its key id.

**The library**: ``cryptography`` (Ed25519) is the ``[signing]`` extra, imported only when a signature is made or
checked: it is 18 MiB, which the plain station install (issue 15 part 3: ≤ 400 MB) cannot afford, and a station
that trusts no keys never needs it. A station whose policy names keys and that lacks it refuses to start with the
install advice (fail closed: a policy is never silently not honoured).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from parcelscan.datasets.datatools import file_sha256
from parcelscan.errors import ParcelscanError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FORMAT = "parcelscan-model-signature/1"
ALGORITHM = "ed25519"
MAX_SIG_BYTES = 64 << 10  # a signature file is a few hundred bytes; anything much larger is not one
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")


@dataclass(frozen=True)
class ModelSignature:
    """The contents of a ``.sig`` file (module docstring)."""

    key_id: str
    model: str
    name: str
    version: str
    sha256: str
    signed_at: str
    signature: str
    format: str = SIGNATURE_FORMAT
    algorithm: str = ALGORITHM

    def to_json(self) -> str:
        data = asdict(self)
        order = ("format", "algorithm", "key_id", "model", "name", "version", "sha256", "signed_at", "signature")
        return json.dumps({k: data[k] for k in order}, indent=1) + "\n"


def signature_path(model_path: str | Path) -> Path:
    """``<model>.onnx.sig`` beside the model."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".sig")


def signed_message(sha256: str, name: str, version: str) -> bytes:
    """The bytes an Ed25519 signature covers: the model's sha256 and what it claims to be (module docstring)."""
    return json.dumps({"format": SIGNATURE_FORMAT, "name": name, "sha256": sha256, "version": version},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# --- keys ------------------------------------------------------------------------------------------------------
def _crypto() -> SimpleNamespace:
    """The parts of ``cryptography`` used here, imported on first use (module docstring: the ``[signing]`` extra)."""
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ModuleNotFoundError as error:
        raise ParcelscanError("model signatures need the optional package 'cryptography', which is not installed: "
                              "pip install 'parcelscan[signing]'") from error
    return SimpleNamespace(InvalidSignature=InvalidSignature, serialization=serialization,
                           Ed25519PrivateKey=Ed25519PrivateKey, Ed25519PublicKey=Ed25519PublicKey)


def check_public_key_hex(text: str, where: str = "public key") -> str:
    """The lower-case hex of an Ed25519 public key given as 64 hex digits (a policy's ``trusted_public_keys``
    entry, a ``.pub`` file); a ParcelscanError naming ``where`` otherwise. Needs no cryptography library."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if not _HEX64.match(value):
        raise ParcelscanError(f"{where}: {str(text)[:80]!r} is not an Ed25519 public key (64 hex digits, as "
                              "`parcelscan models keygen` writes in KEY.pub)")
    return value


def public_key_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A key's id: its raw 32-byte public key in lower-case hex."""
    c = _crypto()
    public = key.public_key() if isinstance(key, c.Ed25519PrivateKey) else key
    return public.public_bytes(c.serialization.Encoding.Raw, c.serialization.PublicFormat.Raw).hex()


def parse_public_key(text: str, where: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from its 64 hex digits."""
    return _crypto().Ed25519PublicKey.from_public_bytes(bytes.fromhex(check_public_key_hex(text, where)))


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a raw (32 bytes) or PEM (PKCS#8, unencrypted) file; refused when group or
    others may read it."""
    path = Path(path)
    try:
        info = path.stat()
        blob = path.read_bytes() if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_SIG_BYTES else None
    except OSError as error:
        raise ParcelscanError(f"--sign-key {path}: cannot read it: {error.strerror or error}") from error
    if blob is None:
        raise ParcelscanError(f"--sign-key {path}: not a private key file (not a regular file of a few bytes)")
    c = _crypto()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ParcelscanError(f"--sign-key {path}: group or others may read it (mode {stat.S_IMODE(info.st_mode):o}); "
                              f"a private key must be private: chmod 600 {path}")
    if len(blob) == 32:
        return c.Ed25519PrivateKey.from_private_bytes(blob)
    if blob.lstrip().startswith(b"-----BEGIN"):
        try:
            key = c.serialization.load_pem_private_key(blob, password=None)
        except (ValueError, TypeError) as error:
            raise ParcelscanError(f"--sign-key {path}: not an unencrypted PEM private key: {error}") from error
        if not isinstance(key, c.Ed25519PrivateKey):
            raise ParcelscanError(f"--sign-key {path}: a {type(key).__name__}, not an Ed25519 private key")
        return key
    raise ParcelscanError(f"--sign-key {path}: not an Ed25519 private key (32 raw bytes or a PEM PKCS#8 file)")


def _inside_git_tree(directory: Path) -> Path | None:
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            return parent
    return None


def keygen(out_dir: str | Path, name: str = "parcelscan-release") -> tuple[Path, Path, str]:
    """Make a key pair in ``out_dir``: ``NAME.key`` (PEM PKCS#8, mode 0600, never overwritten) and ``NAME.pub``
    (the public key's hex, for a policy's ``trusted_public_keys``). Refused inside a git working tree: the
    private key must never enter a repository. Returns (private path, public path, key id)."""
    out = Path(out_dir).expanduser().resolve()
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name):
        raise ParcelscanError(f"--name {name!r}: letters, digits, '.', '_' and '-' only")
    repo = _inside_git_tree(out)
    if repo is not None:
        raise ParcelscanError(f"--out {out}: inside the git working tree {repo}; a private key must never enter a "
                              "repository — keep it on the release manager's machine (e.g. ~/.parcelscan-keys)")
    c = _crypto()
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ParcelscanError(f"{path} exists: refusing to overwrite a key (choose another --name or --out)")
    key = c.Ed25519PrivateKey.generate()
    pem = key.private_bytes(c.serialization.Encoding.PEM, c.serialization.PrivateFormat.PKCS8,
                            c.serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    key_id = public_key_hex(key)
    public_path.write_text(key_id + "\n", encoding="ascii")
    return private_path, public_path, key_id


# --- signing ----------------------------------------------------------------------------------------------------
def sign_model(model_path: str | Path, key: Ed25519PrivateKey, name: str, version: str) -> ModelSignature:
    """Sign ``model_path`` (its bytes' sha256, its metadata ``name`` and ``version``) and write ``<model>.sig``
    atomically. ``name``/``version`` are the model file's own metadata (the caller has read it)."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ParcelscanError(f"model not found: {model_path}")
    digest = file_sha256(model_path)
    signature = key.sign(signed_message(digest, name, version)).hex()
    sig = ModelSignature(public_key_hex(key), model_path.name, name, version, digest,
                         datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), signature)
    target = signature_path(model_path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(sig.to_json(), encoding="utf-8")
    os.replace(tmp, target)
    return sig


def read_signature(model_path: str | Path) -> ModelSignature:
    """The ``.sig`` of a model, checked for form (not for trust or validity); ParcelscanError when missing or
    malformed."""
    model_path = Path(model_path)
    path = signature_path(model_path)
    if not path.is_file():
        raise ParcelscanError(f"{model_path}: refusing an unsigned model: {path.name} is missing")
    try:
        if path.stat().st_size > MAX_SIG_BYTES:
            raise ParcelscanError(f"{path}: too large for a signature file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ParcelscanError(f"{path}: not a model signature file: {error}") from error
    fields = ("format", "algorithm", "key_id", "model", "name", "version", "sha256", "signed_at", "signature")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in fields):
        raise ParcelscanError(f"{path}: not a model signature file (needs the string fields {', '.join(fields)})")
    if data["format"] != SIGNATURE_FORMAT or data["algorithm"] != ALGORITHM:
        raise ParcelscanError(f"{path}: format {data['format'][:40]!r} / algorithm {data['algorithm'][:20]!r}; this "
                              f"station reads {SIGNATURE_FORMAT} / {ALGORITHM}")
    if not (_HEX64.match(data["key_id"]) and _HEX64.match(data["sha256"]) and _HEX128.match(data["signature"])):
        raise ParcelscanError(f"{path}: key_id and sha256 must be 64 lower-case hex digits, signature 128")
    return ModelSignature(**{k: data[k] for k in fields})


def verify_model_signature(model_path: str | Path, trusted_keys: Iterable[str],
                           sha256: str | None = None) -> ModelSignature:
    """The model's signature if one of ``trusted_keys`` (hex) made it over these very bytes; otherwise a
    ParcelscanError that says why (module docstring). ``sha256``: the bytes' digest if already computed."""
    model_path = Path(model_path)
    c = _crypto()  # a station that trusts keys cannot start without it (fail closed)
    trusted = {check_public_key_hex(k, "trusted public key"): parse_public_key(k, "trusted public key")
               for k in trusted_keys}
    if not trusted:
        raise ParcelscanError("no trusted public keys to verify a model signature against")
    short = ", ".join(k[:16] + "…" for k in trusted)
    try:
        sig = read_signature(model_path)
    except ParcelscanError as error:
        raise ParcelscanError(f"{error}; this station's policy accepts only models signed by its trusted key(s) "
                              f"{short} (`parcelscan export --sign-key` / `parcelscan models promote --sign-key`)"
                              ) from error
    if sig.key_id not in trusted:
        raise ParcelscanError(f"{model_path}: refusing the model: it is signed by key {sig.key_id[:16]}…, which this "
                              f"station's policy does not trust (trusted: {short})")
    actual = sha256 or file_sha256(model_path)
    if actual != sig.sha256:
        raise ParcelscanError(f"{model_path}: refusing the model: its sha256 {actual[:16]}… is not the signed "
                              f"{sig.sha256[:16]}… — the file was changed after it was signed")
    try:
        trusted[sig.key_id].verify(bytes.fromhex(sig.signature), signed_message(sig.sha256, sig.name, sig.version))
    except c.InvalidSignature as error:
        raise ParcelscanError(f"{model_path}: refusing the model: its signature by key {sig.key_id[:16]}… does not "
                              f"verify (the .sig was altered or made for other contents)") from error
    return sig


def signature_status(model_path: str | Path) -> str:
    """One line for ``export --show``: who signed the file and whether that signature verifies against its own
    key (trust is the station policy's business, not this line's)."""
    try:
        sig = read_signature(model_path)
    except ParcelscanError as error:
        return f"none ({error})" if signature_path(model_path).exists() else "none (unsigned)"
    try:
        verify_model_signature(model_path, [sig.key_id])
    except ParcelscanError as error:
        return f"INVALID — {error}"
    return f"Ed25519 key {sig.key_id} (valid for {sig.name} {sig.version}, signed {sig.signed_at})"
