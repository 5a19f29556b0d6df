"""Restore and re-verify: fetch -> check checksum -> decrypt -> decompress -> load/verify.

The inverse chain is read from the manifest alone. The encrypted artifact is fetched to the
staging dir first and its sha256 checked against the manifest before anything is decrypted,
so a damaged download never reaches a database. A capture's attachments (``core.attachments``) are
read back the same way and handed to the source's restore and verification.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from erp_backup_pipeline.core import attachments, catalog
from erp_backup_pipeline.core.catalog import Entry, latest
from erp_backup_pipeline.core.codecs import compressor
from erp_backup_pipeline.core.destinations import get
from erp_backup_pipeline.core.manifest import Manifest
from erp_backup_pipeline.core.safe_target import create_file, restore_os_error
from erp_backup_pipeline.core.site import Site, takes_site
from erp_backup_pipeline.core.sources.files_common import selector
from erp_backup_pipeline.core.streams import CHUNK, HashingReader, PipeProducer, Progress
from erp_backup_pipeline.errors import FAILURE, ArtifactNotFound, BackupError, UsageError, VerifyError


@takes_site
def find_entry(site: Site, source: str, partition: str | None = None, capture: str | None = None) -> Entry:
    """The authenticated capture a command acts on: the one with the ID ``capture`` (of ``partition`` when given),
    else the newest verified capture of ``partition``, else of the newest partition (``latest``). ArtifactNotFound
    naming what was rejected there when there is none."""
    found = catalog.of(site, source, partition)
    try:
        if capture:
            return catalog.by_id(found.entries, capture, source, partition)
        return latest(found.entries, source, partition)
    except ArtifactNotFound:
        if found.rejected:
            where = f"for partition {partition}" if partition else "in the catalog"
            # only untrusted files there: refused as untrusted input is (1), not "nothing found"
            raise ArtifactNotFound(f"no authenticated backup of {source} {where}: {len(found.rejected)} file(s) there "
                                   f"are rejected, first {found.rejected[0].line()}", status=FAILURE) from None
        raise


@takes_site
@contextmanager
def fetched(site: Site, entry: Entry) -> Iterator[Path]:
    """Download the artifact from the first destination that holds it, checksum-checked."""
    m = entry.manifest
    site.staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmpdir = Path(tempfile.mkdtemp(prefix="restore-", dir=site.staging_dir))
    try:
        path = tmpdir / Path(m.artifact_key).name
        errors = []
        for dest in list(site.destinations):
            if dest.name not in entry.held_by:
                continue
            try:
                path.unlink(missing_ok=True)  # a copy that failed its checksum on the destination before
                with create_file(path) as fh:  # O_EXCL|O_NOFOLLOW, in a fresh private dir
                    get(dest, m.artifact_key, fh, expected_sha256=m.artifact_sha256)
                break
            except BackupError as exc:
                errors.append(f"{dest.name}: {exc}")
        else:
            raise VerifyError("no intact copy of the artifact: " + "; ".join(errors or ["no destination holds it"]))
        yield path
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@takes_site
def plaintext_reader(site: Site, manifest: Manifest, encrypted: IO[bytes] | Any,
                     progress: Progress | None = None, stage: str = "restore") -> HashingReader:
    """decrypt -> decompress, as the manifest's chain says; hashing the plaintext as it goes."""
    enc_stage = manifest.stage("encrypt")
    comp_stage = manifest.stage("compress")
    encryptor = site.encryptor()
    if encryptor.name != enc_stage["codec"]:
        raise BackupError(f"artifact is encrypted with {enc_stage['codec']}, config says {encryptor.name}")
    decrypted = PipeProducer(lambda w: encryptor.decrypt(encrypted, w), "decrypt")
    return HashingReader(compressor(comp_stage["codec"]).reader(decrypted), progress=progress, stage=stage,
                         total=manifest.stage("dump")["bytes"])


@takes_site
def read_attachments(site: Site, entry: Entry) -> dict[str, bytes]:
    """name -> plaintext of every attachment of the capture, each checked (ciphertext and plaintext sha256)."""
    m = entry.manifest
    if not m.attachments:
        return {}
    encryptor = site.encryptor()
    if encryptor.name != m.stage("encrypt")["codec"]:
        raise BackupError(f"artifact is encrypted with {m.stage('encrypt')['codec']}, config says {encryptor.name}")
    codec = compressor(m.stage("compress")["codec"])
    dests = list(site.destinations)
    return {rec["name"]: attachments.read(dests, entry.held_by, rec, encryptor.decrypt, codec.decompress)
            for rec in m.attachments}


def _check_plain(reader: HashingReader, manifest: Manifest) -> None:
    while reader.read(CHUNK):
        pass
    dump = manifest.stage("dump")
    if (reader.stats.bytes, reader.stats.sha256) != (dump["bytes"], dump["sha256"]):
        raise VerifyError(f"{manifest.source} {manifest.partition}: decrypted content differs from the dump recorded "
                          "in the manifest")


def _depended_on(site: Site, m: Manifest) -> dict[str, Entry]:
    """The earlier artifacts a backup builds on (uploads), each with its catalog entry; VerifyError if one is gone."""
    keys = m.facts.get("depends_on") or []
    if not keys:
        return {}
    by_key = {e.manifest.artifact_key: e for e in catalog.of(site, m.source).entries}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise VerifyError(f"{m.source} {m.partition}: depends on {len(missing)} artifact(s) that no destination holds, "
                          f"first {missing[0]}")
    return {k: by_key[k] for k in keys}


def _read_back(site: Site, entry: Entry) -> None:
    """Download an artifact, check its sha256, decrypt and decompress it, and compare with its dump."""
    with fetched(site, entry) as path, open(path, "rb") as fh:
        _check_plain(plaintext_reader(site, entry.manifest, fh), entry.manifest)


@takes_site
def verify_backup(site: Site, source: str, partition: str | None, progress: Progress | None = None,
                  read_data: int | None = None, capture: str | None = None) -> dict[str, Any]:
    """Re-download, check checksums, decrypt, decompress and run the source's own verification. For a
    backup built on earlier ones (uploads), check that each of them still exists, and with ``read_data``
    also read them back: 0 = all of them, K = a random sample of K."""
    return verify_entry(site, find_entry(site, source, partition, capture), progress, read_data)


@takes_site
def verify_entry(site: Site, entry: Entry, progress: Progress | None = None,
                 read_data: int | None = None) -> dict[str, Any]:
    """``verify_backup`` of one catalog entry (also one that is not authenticated yet: ``catalog adopt``)."""
    m = entry.manifest
    source, partition = m.source, m.partition
    src = site.source(source)
    t0 = time.monotonic()
    depends = _depended_on(site, m)
    extra: dict[str, Any] = {}
    check = getattr(src, "verify_attachment", None)
    for name, data in read_attachments(site, entry).items():
        if check is None:
            raise VerifyError(f"{source} {partition}: the manifest names an attachment {name!r}, which {source} "
                              "captures never have")
        extra[f"attachment_{name}"] = check(name, data, m.facts)
    with fetched(site, entry) as path, open(path, "rb") as fh:
        reader = plaintext_reader(site, m, fh, progress, "verify")
        details = src.verify(reader, path.parent, m.facts)
        _check_plain(reader, m)
    if depends:
        extra["depends_on"] = len(depends)
    if depends and read_data is not None:
        keys = sorted(depends)
        chosen = keys if read_data == 0 else random.sample(keys, min(read_data, len(keys)))
        for key in chosen:
            _read_back(site, depends[key])
        extra["depends_on_read"] = len(chosen)
    return {"source": source, "partition": partition, "id": entry.id, "captured_at": m.captured_at, "ok": True,
            "seconds": round(time.monotonic() - t0, 2), **details, **extra}


@takes_site
def list_files(site: Site, source: str, partition: str | None = None, capture: str | None = None,
               path: str | None = None) -> tuple[Entry, list[dict[str, Any]]]:
    """The files of a file-tree capture (config, uploads; ``find_entry`` picks it), read from its artifact, each
    checked as a restore checks it; with ``path`` only that file or what lies under that directory (a glob matches
    whole paths: ``*.pdf``, ``2026/*``)."""
    src = site.source(source)
    if not hasattr(src, "list_files"):
        raise UsageError(f"{source} is not a file tree: ls lists the files of config and uploads captures")
    entry = find_entry(site, source, partition, capture)
    m = entry.manifest
    with fetched(site, entry) as fetched_path, open(fetched_path, "rb") as fh:
        reader = plaintext_reader(site, m, fh)
        files = src.list_files(reader)
        _check_plain(reader, m)
    selected = selector([path] if path else None)
    return entry, [f for f in files if selected is None or selected(f["path"])]


@takes_site
def restore_plan(site: Site, source: str, partition: str | None, target: str, force: bool,
                 options: dict[str, Any] | None = None, capture: str | None = None) -> list[str]:
    entry = find_entry(site, source, partition, capture)
    m = entry.manifest
    steps = [f"use {m.source} {m.partition} captured {m.captured_at} ({m.artifact_bytes} bytes, "
             f"sha256 {m.artifact_sha256[:12]}...) from {', '.join(entry.held_by)} (capture {entry.id})",
             "download and check sha256, then " + " | ".join(
                 f"{e['codec']} decrypt" if e["stage"] == "encrypt" else f"{e['codec']} decompress"
                 for e in reversed(m.chain) if e["stage"] in ("encrypt", "compress"))]
    return steps + site.source(source).restore_plan(target, force, m.facts, **(options or {}))


def _shown_target(target: str) -> str:
    return target.split("@", 1)[-1] if "://" in target else target


@takes_site
def restore_backup(site: Site, source: str, partition: str | None, target: str, force: bool = False,
                   progress: Progress | None = None, options: dict[str, Any] | None = None,
                   capture: str | None = None) -> dict[str, Any]:
    """Restore a capture (``find_entry``: by ID, the newest verified one of the partition, or ``latest``) into a NEW
    target. ``options`` are the source's own restore options (PostgreSQL: ``no_owner``, ``server``)."""
    entry = find_entry(site, source, partition, capture)
    m = entry.manifest
    src = site.source(source)
    t0 = time.monotonic()
    depends = _depended_on(site, m)

    @contextmanager
    def fetch(key: str) -> Iterator[Any]:
        older = depends[key].manifest
        with fetched(site, depends[key]) as p, open(p, "rb") as f:
            plain = plaintext_reader(site, older, f)
            yield plain
            _check_plain(plain, older)

    extras = read_attachments(site, entry)  # before anything changes: a missing one refuses the restore
    with fetched(site, entry) as path, open(path, "rb") as fh:
        reader = plaintext_reader(site, m, fh, progress, "restore")
        try:
            result = src.restore(reader, target, force, path.parent, fetch=fetch, facts=m.facts, attachments=extras,
                                 **(options or {}))
        except OSError as exc:  # permission denied, a read-only file system, a full disk: one line
            raise restore_os_error(exc, _shown_target(target)) from None
        _check_plain(reader, m)
    return {"source": source, "partition": m.partition, "id": entry.id, "captured_at": m.captured_at,
            "seconds": round(time.monotonic() - t0, 2), **result}
