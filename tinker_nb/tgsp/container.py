"""The TGSP zip container: deterministic writing and strict, bounded reading (torch-free).

Reading enforces the shape rules of docs/TGSP_SPEC.md §2 before any entry is used: exactly the six
fixed names, each once, in the fixed order; stored (not compressed), not encrypted, no data
descriptors, general-purpose flags 0; sizes within limits; no archive comment, no entry comments, no
extra fields (local or central), no ZIP64 records; local headers that agree field for field with the
central directory; entries contiguous from offset 0, the central directory right after them and the
end record as the last 22 bytes of the file. So no byte of a package that verifies lies outside the
signed content and the fixed zip framing. Entry bytes are checked against the zip CRC-32 as they are
read; the SHA-256 digests in the signed manifest are the security check (package.py).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, PackageError, TinkerError
from ..fsio import atomic_file
from . import format as F

__all__ = ["Container", "fail", "write_container"]

_CHUNK = 1 << 20
_LFH = struct.Struct("<4s5H3L2H")  # local file header (30 bytes)
_CDH = struct.Struct("<4s6H3L5H2L")  # central directory file header (46 bytes)
_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record (22 bytes)
# Local and central header fields that must agree: flags, method, time, date, CRC-32, sizes.
_AGREE = ("flags", "method", "time", "date", "crc", "compressed size", "size")


def fail(cls: type[TinkerError], entry: str | None, message: str) -> TinkerError:
    """An error whose message starts with the entry it is about; ``exc.entry`` names it too."""
    exc = cls(f"{entry}: {message}" if entry else message)
    exc.entry = entry
    return exc


def write_container(path: str | os.PathLike[str], entries: dict[str, bytes]) -> Path:
    """Write the six entries (fixed order, stored, fixed timestamps) atomically to ``path``."""
    if sorted(entries) != sorted(F.ENTRIES):
        raise PackageError(f"a TGSP container holds exactly {', '.join(F.ENTRIES)}.")
    total = sum(len(v) for v in entries.values())
    for name, data in entries.items():
        if len(data) > F.MAX_SIZES[name]:
            raise PackageError(f"{name}: {len(data)} bytes, over the TGSP v1 limit of {F.MAX_SIZES[name]} bytes.")
    if total > F.MAX_ARCHIVE:
        raise PackageError(f"the package would be {total} bytes, over the TGSP v1 limit of {F.MAX_ARCHIVE}.")
    out = Path(path)
    if not out.parent.is_dir():
        raise PackageError(f"cannot write {out}: folder {out.parent} does not exist.")
    with (atomic_file(out, mode=0o644, temp_prefix=f".{out.name}.", temp_suffix=".partial") as f,
          zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=False) as z):
        for name in F.ENTRIES:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            z.writestr(info, entries[name])
    return out


class Container:
    """An opened, shape-checked package. Small entries are held in memory; ``weights.enc`` is streamed.

    Use as a context manager; the file stays open so that every later read sees the same bytes.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PackageError(f"{self.path}: no such package file.")
        self._f = open(self.path, "rb")
        try:
            self._open()
        except BaseException:
            self._f.close()
            raise

    def _open(self) -> None:
        if self._f.read(4) != b"PK\x03\x04":
            raise PackageError(f"{self.path.name}: not a TGSP package (a zip archive starting with an entry).")
        self._f.seek(0)
        try:
            self._zip = zipfile.ZipFile(self._f)
        except (zipfile.BadZipFile, OSError, ValueError):
            raise PackageError(f"{self.path.name}: not a readable zip archive.") from None
        z = self._zip
        if z.comment:
            raise PackageError(f"{self.path.name}: the zip has an archive comment; TGSP v1 allows none.")
        infos = z.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if n not in F.ENTRIES:
                kind = "a path outside the archive" if (n.startswith(("/", "\\")) or ".." in n.replace("\\", "/")
                                                         .split("/") or ":" in n) else "an unexpected entry"
                raise fail(PackageError, n, f"{kind}; a package holds only {', '.join(F.ENTRIES)}.")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise fail(PackageError, dup[0], "duplicate entry (each entry must appear exactly once).")
        missing = [n for n in F.ENTRIES if n not in names]
        if missing:
            raise fail(PackageError, missing[0], "missing entry.")
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED or i.compress_size != i.file_size:
                raise fail(PackageError, i.filename, "entry is compressed; TGSP v1 entries are stored.")
            if i.flag_bits & 0x1:
                raise fail(PackageError, i.filename, "entry is zip-encrypted; TGSP v1 does not use zip encryption.")
            if i.flag_bits & 0x8:
                raise fail(PackageError, i.filename, "entry uses a data descriptor; TGSP v1 entries have none.")
            if i.file_size > F.MAX_SIZES[i.filename]:
                raise fail(PackageError, i.filename, f"{i.file_size} bytes, over the limit of "
                                                     f"{F.MAX_SIZES[i.filename]} bytes.")
        self._check_contiguous(sorted(infos, key=lambda i: i.header_offset))
        self._check_strict()
        self.infos = {i.filename: i for i in infos}
        self.small = {n: self._read(n) for n in F.ENTRIES if n != F.WEIGHTS}

    def _check_contiguous(self, infos: list[Any]) -> None:
        """Entries follow each other from offset 0 and the central directory follows the last: no hidden bytes."""
        pos = 0
        for i in infos:
            if i.header_offset != pos:
                raise PackageError(f"{self.path.name}: {i.header_offset - pos:+d} unaccounted bytes before entry "
                                   f"{i.filename!r}; TGSP v1 entries are contiguous.")
            self._f.seek(pos)
            head = self._f.read(30)
            if len(head) != 30 or head[:4] != b"PK\x03\x04":
                raise fail(PackageError, i.filename, "bad local file header.")
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            pos += 30 + name_len + extra_len + i.compress_size
        if self._zip.start_dir != pos:
            raise PackageError(f"{self.path.name}: unaccounted bytes before the zip central directory.")
        self._f.seek(0)

    def _check_strict(self) -> None:
        """End record last, no ZIP64; central headers in order without extras or comments, flags 0; each
        local header agrees with its central header and has no extra field (docs/TGSP_SPEC.md §2)."""
        name = self.path.name
        f = self._f
        size = f.seek(0, os.SEEK_END)
        f.seek(size - _EOCD.size)
        sig, disk, cd_disk, n_disk, n_total, cd_size, cd_off, comment_len = _EOCD.unpack(f.read(_EOCD.size))
        if sig != b"PK\x05\x06" or comment_len:
            raise PackageError(f"{name}: bytes after the end of central directory record; it must end the file.")
        if disk or cd_disk or n_disk != len(F.ENTRIES) or n_total != len(F.ENTRIES):
            raise PackageError(f"{name}: the end record must describe one disk with {len(F.ENTRIES)} entries "
                               "(no ZIP64, no multi-disk archives).")
        if cd_off + cd_size != size - _EOCD.size:
            raise PackageError(f"{name}: bytes between the central directory and the end record.")
        f.seek(cd_off)
        cd = f.read(cd_size)
        pos = 0
        for want in F.ENTRIES:
            if pos + _CDH.size > len(cd):
                raise PackageError(f"{name}: truncated central directory.")
            (sig, _made, _need, flags, method, time_, date, crc, csize, usize, nlen, xlen, clen, dstart, _ia, _ea,
             off) = _CDH.unpack_from(cd, pos)
            entry = cd[pos + _CDH.size:pos + _CDH.size + nlen].decode("ascii", "replace")
            if sig != b"PK\x01\x02":
                raise PackageError(f"{name}: malformed central directory.")
            if entry != want:
                raise fail(PackageError, entry, f"out of order; TGSP v1 entries appear in the order "
                                                f"{', '.join(F.ENTRIES)}.")
            if xlen:
                raise fail(PackageError, entry, "has an extra field in the central directory; TGSP v1 allows none.")
            if clen:
                raise fail(PackageError, entry, "has an entry comment; TGSP v1 allows none.")
            if flags or dstart:
                raise fail(PackageError, entry, f"general-purpose flags {flags:#06x} (or disk {dstart}); TGSP v1 "
                                                "entries have flags 0.")
            f.seek(off)
            lsig, _lneed, lflags, lmethod, ltime, ldate, lcrc, lcsize, lusize, lnlen, lxlen = _LFH.unpack(f.read(30))
            lname = f.read(lnlen).decode("ascii", "replace")
            if lxlen:
                raise fail(PackageError, entry, "has an extra field in its local header; TGSP v1 allows none.")
            for field, a, b in zip(_AGREE, (lflags, lmethod, ltime, ldate, lcrc, lcsize, lusize),
                                   (flags, method, time_, date, crc, csize, usize)):
                if a != b:
                    raise fail(PackageError, entry, f"local header {field} differs from the central directory.")
            if lsig != b"PK\x03\x04" or lname != entry:
                raise fail(PackageError, entry, "local header name differs from the central directory.")
            pos += _CDH.size + nlen
        if pos != len(cd):
            raise PackageError(f"{name}: extra bytes in the central directory.")
        f.seek(0)

    # ------------------------------------------------------------------ reading
    def _read(self, name: str) -> bytes:
        return b"".join(self.stream(name))

    def stream(self, name: str) -> Iterator[bytes]:
        """Yield an entry's bytes in 1 MiB pieces (zip CRC checked at the end)."""
        try:
            with self._zip.open(self.infos[name]) as f:
                while True:
                    block = f.read(_CHUNK)
                    if not block:
                        break
                    yield block
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise fail(IntegrityError, name, "entry is corrupt (zip CRC or framing).") from None

    def sha256(self, name: str) -> str:
        if name in self.small:
            return hashlib.sha256(self.small[name]).hexdigest()
        h = hashlib.sha256()
        for block in self.stream(name):
            h.update(block)
        return h.hexdigest()

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def close(self) -> None:
        self._zip.close()
        self._f.close()

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
