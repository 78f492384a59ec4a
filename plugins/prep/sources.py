"""Finding the photos: a folder walked recursively (symlink loops cut), or a .zip unpacked
safely inside the run; relative paths, folder parts, unique ids, and ground-truth labels."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import unicodedata
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".tif", ".tiff", ".bmp", ".dib",
                  ".gif", ".heic", ".heif", ".hif", ".avif"}
# Files that live beside photos and are not photos: never reported.
SIDECAR_SUFFIXES = {".txt", ".caption", ".json", ".xmp", ".aae", ".thm", ".ini", ".db", ".md", ".csv", ".toml", ".yaml"}
JUNK_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}
LABELS_FILE = "labels.json"

# Zip-bomb caps: a photo never expands 100x, and no photo folder needs more than this.
ZIP_MAX_TOTAL = 8 * 1024**3
ZIP_MAX_RATIO = 100
ZIP_RATIO_FLOOR = 16 * 1024**2  # small entries may compress well (a flat test image)


@dataclass
class Found:
    """One input file: its path relative to the source root (posix) and where to read it."""

    rel: str
    path: Path
    problem: str | None = None  # set when the file cannot even be looked at
    culled: str | None = None  # set for files that are plainly not images

    @property
    def folders(self) -> list[str]:
        return list(PurePosixPath(self.rel).parts[:-1])


@dataclass
class Listing:
    files: list[Found] = field(default_factory=list)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    root: Path | None = None


def _skip(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def walk_folder(root: Path) -> list[Found]:
    """Every file under ``root``, following directory symlinks once each (loops cut)."""
    found: list[Found] = []
    seen: set[tuple[int, int]] = set()
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue  # a symlink back up the tree, or a second link to a folder already read
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.append(Found(prefix.rstrip("/") or ".", folder, problem=f"cannot list folder: {exc.strerror}"))
            continue
        for entry in entries:
            if _skip(entry.name):
                continue
            rel = prefix + entry.name
            path = Path(entry.path)
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    found.append(Found(rel, path, problem="symlink loop: the link points back at itself"))
                elif entry.is_symlink():
                    found.append(Found(rel, path, problem="broken symlink: its target does not exist"))
                else:
                    found.append(Found(rel, path, problem=f"cannot read: {exc.strerror}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((path, rel + "/"))
            elif stat.S_ISREG(st.st_mode) and path.suffix.lower() not in SIDECAR_SUFFIXES:
                found.append(_classify(rel, path))
    found.sort(key=lambda f: f.rel)
    return found


def _classify(rel: str, path: Path) -> Found:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Found(rel, path)
    return Found(rel, path, culled=f"not an image ({suffix or 'no extension'}): skipped")


def safe_member_name(name: str) -> str | None:
    """The member's path if it stays inside the extraction folder, else None."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def unpack_zip(archive: Path, dest: Path) -> list[Found]:
    """Extract ``archive`` into ``dest``, never outside it; unsafe or bomb-like entries get a
    verdict instead of bytes on disk."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    problems: list[Found] = []
    total = 0
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        return [Found(archive.name, archive, problem=f"not a readable zip archive: {exc}")]
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            safe = safe_member_name(info.filename)
            if safe is None:
                problems.append(Found(info.filename, archive, problem="zip entry with an unsafe path (absolute or '..'): not extracted"))
                continue
            if any(_skip(p) for p in safe.split("/")):
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                problems.append(Found(safe, archive, problem="zip entry is a symlink (could point anywhere): not extracted"))
                continue
            declared_ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > ZIP_RATIO_FLOOR and declared_ratio > ZIP_MAX_RATIO:
                problems.append(Found(safe, archive, problem=f"zip bomb guard: entry expands {declared_ratio:.0f}x "
                                      f"({info.file_size / 1024**2:.0f} MiB): not extracted"))
                continue
            target = dest / safe
            target.parent.mkdir(parents=True, exist_ok=True)
            written, error = 0, None
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    # Count real bytes: headers can lie about sizes.
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if total + written > ZIP_MAX_TOTAL or (written > ZIP_RATIO_FLOOR and written > ZIP_MAX_RATIO * max(info.compress_size, 1)):
                            error = "zip bomb guard: entry expands far beyond its compressed size: not extracted"
                            break
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:  # corrupt, encrypted…
                error = f"cannot extract from the zip: {exc}"
            if error:
                target.unlink(missing_ok=True)
                problems.append(Found(safe, archive, problem=error))
                continue
            total += written
    return problems


def read_labels(root: Path) -> dict[str, dict[str, Any]]:
    """``labels.json`` at the root: {relative path: {...}} or [{"path": …, "labels": {...}}].
    Anything else (e.g. {flavour: colour word}) is not per-photo ground truth: ignored."""
    path = root / LABELS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, Any]] = {}
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((d.get("path"), d.get("labels")) for d in data if isinstance(d, dict))
    else:
        return {}
    for key, value in items:
        if isinstance(key, str) and isinstance(value, dict):
            key = key.replace("\\", "/")
            out[key[2:] if key.startswith("./") else key] = value
    return out


def list_source(source: Path, unpack_dir: Path) -> Listing:
    if source.is_file() and source.suffix.lower() == ".zip":
        problems = unpack_zip(source, unpack_dir)
        files = [f for f in walk_folder(unpack_dir) if f.rel != LABELS_FILE]
        return Listing(sorted(files + problems, key=lambda f: f.rel), read_labels(unpack_dir), unpack_dir)
    if source.is_file():
        return Listing([_classify(source.name, source)], {}, source.parent)
    files = [f for f in walk_folder(source) if f.rel != LABELS_FILE]
    return Listing(files, read_labels(source), source)


def locate(source: Path, rel: str, unpack_dir: Path) -> Path | None:
    """Where ``list_source`` read the file it listed as ``rel`` (a .zip: unpacked into
    ``unpack_dir``), or None when it is not there; never a path outside the source."""
    source = Path(source).expanduser()
    if source.is_file() and source.suffix.lower() != ".zip":
        return source if rel == source.name else None
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        return None  # what a hand-edited report.json might say; prep never lists such a path
    # Not resolved: prep read through the folder's symlinks, and so does this.
    path = (unpack_dir if source.is_file() else source).joinpath(*parts)
    return path if path.is_file() else None


def why_no_images(source: Path) -> str | None:
    """Why ``source`` holds nothing prep would try as a photo (no file with an image
    extension), or None. Names only: nothing is decoded, a zip only has its directory read."""
    known = ", ".join(sorted(IMAGE_SUFFIXES))
    if not source.exists():
        return f"photos folder not found: {source}"
    if source.is_file() and source.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(source) as zf:
                names = [safe_member_name(i.filename) for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            return f"not a readable zip archive: {source} ({exc})"
        if any(n and not any(_skip(p) for p in n.split("/")) and PurePosixPath(n).suffix.lower() in IMAGE_SUFFIXES
               for n in names):
            return None
        return f"no images found in {source}: no file in the archive is named like a photo ({known})"
    if source.is_file():
        return None if source.suffix.lower() in IMAGE_SUFFIXES else f"not an image file: {source} (known: {known})"
    files = walk_folder(source)
    if any(f.problem is None and f.culled is None for f in files):
        return None
    unreadable = [f for f in files if f.problem is not None]
    if unreadable:
        return f"no readable images in {source}: {unreadable[0].rel}: {unreadable[0].problem}"
    return f"no images found in {source}: no file named like a photo ({known})"


def slug(rel: str) -> str:
    """``jelly-belly/night/outdoor/IMG_0012.jpg`` → ``jelly-belly_night_outdoor_IMG_0012``."""
    stem = str(PurePosixPath(rel).with_suffix("")) if PurePosixPath(rel).suffix else rel
    stem = unicodedata.normalize("NFC", stem)
    parts = [re.sub(r"[^\w.-]+", "-", p, flags=re.UNICODE).strip("-.") for p in stem.split("/")]
    text = "_".join(p for p in parts if p) or "photo"
    return text[:120]


def unique_ids(rels: list[str], taken_ids: Iterable[str] = ()) -> dict[str, str]:
    """A slug per path, unique even on case-insensitive file systems (and apart from
    ``taken_ids``: a photo prepared later must not take a kept photo's name)."""
    ids: dict[str, str] = {}
    taken = {t.lower() for t in taken_ids}
    for rel in rels:
        base = slug(rel)
        candidate, n = base, 2
        while candidate.lower() in taken:
            candidate, n = f"{base}-{n}", n + 1
        taken.add(candidate.lower())
        ids[rel] = candidate
    return ids
