"""What prep will find in a photo source, told without preparing it: the files it would
try as photos and each one's upright size, read from the image header (Pillow opens
lazily: no pixel is decoded, a zip is read in place and nothing is written). The plan
counts photos and names the ones smaller than the training resolution from this."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import Image

from clood_candy.plan.records import SourceSurvey
from clood_candy_plugins.prep.sources import IMAGE_SUFFIXES, LABELS_FILE, _skip, safe_member_name, walk_folder

ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def survey(source: Path) -> SourceSurvey:
    source = Path(source).expanduser()
    if source.is_file() and source.suffix.lower() == ".zip":
        return _zip(source)
    if source.is_file():
        names = [source.name] if source.suffix.lower() in IMAGE_SUFFIXES else []
        return _sized(names, lambda name: open(source, "rb"))
    files = [f for f in walk_folder(source) if f.rel != LABELS_FILE and f.problem is None and f.culled is None]
    paths = {f.rel: f.path for f in files}
    return _sized(list(paths), lambda rel: open(paths[rel], "rb"))


def _zip(archive: Path) -> SourceSurvey:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        return SourceSurvey(photos=[])
    with zf:
        members = {}
        for info in zf.infolist():
            name = None if info.is_dir() else safe_member_name(info.filename)
            if name and not any(_skip(p) for p in name.split("/")) and PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
                members[name] = info
        return _sized(sorted(members), lambda name: zf.open(members[name]))


def _sized(names: list[str], opener) -> SourceSurvey:
    sizes: dict[str, tuple[int, int]] = {}
    for name in names:
        size = _header_size(opener, name)
        if size is not None:
            sizes[name] = size
    return SourceSurvey(photos=names, sizes=sizes)


def _header_size(opener, name: str) -> tuple[int, int] | None:
    """(width, height) as the photo stands upright; None when the header is unreadable
    (prep will give that file its own verdict)."""
    try:
        with warnings.catch_warnings(), opener(name) as handle:
            warnings.simplefilter("ignore")  # a huge photo's DecompressionBombWarning: prep decides
            return _upright(handle)
    except Exception:
        return None


def _upright(handle: IO[bytes]) -> tuple[int, int]:
    with Image.open(handle) as image:
        width, height = image.size
        try:
            orientation = image.getexif().get(0x0112, 1)
        except Exception:
            orientation = 1
    return (height, width) if orientation in ROTATED else (width, height)
