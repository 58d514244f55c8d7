"""What a container's header asks of FFmpeg, counted from its bytes before FFmpeg reads it.

FFmpeg files each tag in a list it first scans for the tag's name, and each chapter in a list it
scans for the chapter's id, so a header of 100,000 tags (a megabyte or two) keeps it busy for
minutes; and it builds an index entry for every sample an MP4 table claims before it reads one.
`check` walks the same structures FFmpeg walks (ID3v2 tags, MP4 boxes, a FLAC's comments, ASF's
header objects, a trailing APE tag), bounded, and refuses a file whose tags and chapters number
over MAX_TAGS (or over MAX_NAMING with their names' bytes) or whose tables claim more than the
file holds. Streams are counted as they pass (`StreamTags`). Matroska's tags are not counted but
hidden from FFmpeg (`hidden`).
"""
from __future__ import annotations

import io
import os
import re
import uuid
import zlib
from collections.abc import Iterator
from typing import BinaryIO

from .audio import AudioError

MAX_TAGS = 4096  # tags and chapters a file FFmpeg reads may hold (a real file has dozens)
MAX_ELEMENTS = 1_000_000  # boxes or elements a header walk visits (a long fragmented MP4 has a few a second)
MAX_ALAC_FRAME = 1 << 16  # samples a channel in one ALAC frame (Apple's encoder writes 4096)
# Bytes a file's compressed ID3 frames may inflate to, all together: FFmpeg allocates what each
# frame states and keeps what it inflates as a tag (a PRIV frame's four times over, escaped), so
# 10 MB of frames stating 256 MiB each took 16 GB.
MAX_INFLATED = 16 << 20
# Tags times the bytes they are named with: FFmpeg compares a new tag's name with every name
# before it, as far as they agree, so 4096 names of 2000 bytes that differ only at their ends
# cost 17 G comparisons (minutes). 2^30 is a second or two: a few thousand short names, or a few
# hundred long ones.
MAX_NAMING = 1 << 30


def check(f: BinaryIO, demuxer: str) -> None:
    """AudioError if the file `f` (seekable), read with FFmpeg's `demuxer`, holds more than
    MAX_TAGS tags and chapters, or tables claiming more than it holds. `f` is left at its start."""
    try:
        known = os.fstat(f.fileno())
        key = (known.st_dev, known.st_ino, known.st_size, known.st_mtime_ns, demuxer)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        key = None  # bytes in memory: walked each time, as cheaply
    if key is not None and key in _PASSED:
        return
    if _walk(f, demuxer).full():
        raise _refusal()
    if key is not None:
        if len(_PASSED) >= 4096:
            _PASSED.clear()
        _PASSED.add(key)


# Files walked and passed, by device, inode, size, time and demuxer: an item FFmpeg reads is
# opened to probe it, to read it out and to encode it, and an MP4 or ADTS file is read whole to walk.
_PASSED: set[tuple] = set()


def _over(tags: int, named: int) -> bool:
    return tags > MAX_TAGS or tags * named > MAX_NAMING


def _refusal() -> AudioError:
    return AudioError(f"its header holds more than {MAX_TAGS} tags and chapters, or tags too long for how many "
                      "there are, which FFmpeg would take minutes to file (a crafted list?)")


def count_tags(f: BinaryIO, demuxer: str) -> int:
    """How many tags and chapters FFmpeg would file for `f`, at most (every frame, item or id of a
    kind it files counts); the count stops a little over MAX_TAGS. AudioError for tables that
    claim more than the file holds. `f` is left at its start."""
    return _walk(f, demuxer).tags


def _walk(f: BinaryIO, demuxer: str, between: bool = True) -> _Walk:
    size = f.seek(0, os.SEEK_END)
    walk = _Walk(f, size)
    try:
        after = walk.id3v2(0)  # FFmpeg reads ID3v2 tags at the start of any file
        if demuxer == "mov":
            walk.mp4(0, size, 0)
            walk.mp4_elsewhere()
        elif demuxer == "flac":
            walk.flac(after)
        elif demuxer == "asf":
            walk.asf()
        elif demuxer in ("mp3", "aac"):
            walk.ape()
        if demuxer == "aac" and between:
            walk.id3v2_between(after)
    finally:
        f.seek(0)
    return walk


class _Walk:
    """One walk over a file's headers: `tags` counts what FFmpeg would file (a bound from above:
    every frame, item or element of a kind it files counts), `elements` what was visited."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.tags, self.elements = f, size, 0, 0
        self.named = 0  # bytes of what FFmpeg makes names of (and of values, where they share a box)
        self.inflated = 0  # bytes the compressed ID3 frames state they inflate to
        self.boxes: set[int] = set()  # where the MP4 boxes walked start
        self.table: dict = {}  # what the MP4 sample table being walked says of its chunks

    def read(self, at: int, n: int) -> bytes:
        self.f.seek(at)
        return self.f.read(n)

    def visit(self) -> None:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise AudioError(f"its header has over {MAX_ELEMENTS} boxes or elements")

    def full(self) -> bool:
        return _over(self.tags, self.named)

    # ID3v2, as FFmpeg's id3v2.c walks it: consecutive tags, frame sizes read as FFmpeg reads them.
    def id3v2(self, at: int) -> int:
        """Counts the ID3v2 tags starting at `at`; gives where the data after them starts."""
        while not self.full():
            head = self.read(at, 10)
            if len(head) < 10 or head[:3] != b"ID3" or not _id3_header(head):
                return at
            self.visit()
            length = _syncsafe(head[6:10])
            end = at + 10 + length + (10 if head[3] == 4 and head[5] & 0x10 else 0)
            self._id3_frames(at + 10, length, head[3], head[5])
            at = end
        return at

    def id3v2_between(self, after: int) -> None:
        """The ID3v2 tags between an ADTS stream's frames (FFmpeg files each one's tags as it
        meets it, into the file's own list): every tag wherever its id occurs."""
        walked = after
        for at in self._positions(re.compile(b"ID3"), 3):
            if at >= walked and not self.full():
                walked = self.id3v2(at)

    def _id3_frames(self, at: int, length: int, version: int, flags: int) -> None:
        if version not in (2, 3, 4) or (version == 2 and flags & 0x40):
            return
        header = 6 if version == 2 else 10
        if version > 2 and flags & 0x40:  # an extended header
            extended = _syncsafe(self.read(at, 4)) - (4 if version == 4 else 0)
            if extended < 0:
                return
            at += 4 + extended
            length -= extended + 4
        while length >= header and not self.full():
            head = self.read(at, header)
            if len(head) < header:
                return
            tflags = 0
            if version == 2:
                frame = int.from_bytes(head[3:6], "big")
            else:
                frame = int.from_bytes(head[4:8], "big")
                if version == 4 and frame > 0x7F:
                    if frame < length:  # some writers put v2.3 sizes in v2.4: FFmpeg looks at what follows
                        if self._id3_name_at(at + 10 + _unsafe(frame)) == 1:
                            frame = _unsafe(frame)
                        elif self._id3_name_at(at + 10 + frame) != 1:
                            return
                    else:
                        frame = _unsafe(frame)
                tflags = int.from_bytes(head[8:10], "big")
            if frame > 1 << 28:
                return
            length -= header + frame
            if length < 0:
                return
            body, at = at + header, at + header + frame
            if frame == 0:
                continue
            if tflags & 0x0001:  # the frame states its inflated size first
                if frame < 4:
                    return
                inflated, body, frame = int.from_bytes(self.read(body, 4), "big"), body + 4, frame - 4
            else:
                inflated = frame
            if tflags & 0x0004:
                continue  # encrypted: FFmpeg skips it
            if not head[0]:
                return  # padding
            self.visit()
            self.tags += 1
            if head[:4] in _ID3_NAMED or head[:3] in _ID3_NAMED:
                self.named += inflated if tflags & 0x0008 else frame
            if tflags & 0x0008:
                self.inflated += inflated
                if self.inflated > MAX_INFLATED:
                    raise AudioError(f"its compressed ID3 frames inflate to {self.inflated} bytes or more (mimi reads "
                                     f"at most {MAX_INFLATED >> 20} MiB of them)")
            if head[:4] == b"CHAP":
                self._id3_chapter(body, frame, bool(flags & 0x80 or tflags & 0x0002), bool(tflags & 0x0008))

    def _id3_name_at(self, at: int) -> int:
        name = self.read(at, 4)
        if len(name) < 4:
            return -1
        return 1 if name == bytes(4) or all(48 <= b <= 57 or 65 <= b <= 90 for b in name) else 0

    def _id3_chapter(self, at: int, length: int, unsynchronised: bool, compressed: bool) -> None:
        """A CHAP frame's own frames (FFmpeg files its T... frames in the chapter's list)."""
        body = self.read(at, length)
        if unsynchronised:
            body = body.replace(b"\xff\x00", b"\xff")
        if compressed:
            try:
                body = zlib.decompressobj().decompress(body, MAX_INFLATED)
            except zlib.error:
                return
        at = body.find(b"\x00") + 1 or len(body)  # past the element id
        left = len(body) - at - 16
        at += 16
        while left > 10 and not self.full():
            frame = int.from_bytes(body[at + 4:at + 8], "big", signed=True)
            left -= 10
            if frame < 0 or frame > left:
                return
            self.visit()
            if body[at] == ord("T"):  # a chapter's text frame: its own list, named by its frames
                self.tags += 1
                self.named += frame
            at += 10 + frame
            left -= frame

    # MP4: sample tables against the file, and the items FFmpeg files as tags.
    def mp4(self, start: int, end: int, depth: int, items: bool = False) -> None:
        at = start
        while at + 8 <= end and not self.full():
            self.visit()
            head = self.read(at, 16)
            box, kind, header = int.from_bytes(head[:4], "big"), head[4:8], 8
            if box == 1 and len(head) == 16:
                box, header = int.from_bytes(head[8:16], "big"), 16
            elif box == 0:
                box = end - at
            if box < header:
                return  # a damaged box: FFmpeg says so
            box = min(box, end - at)  # FFmpeg reads a box that runs past its parent as ending with it
            self.boxes.add(at)
            self.tags += items
            self.named += box if items else 0
            if depth < 16 and kind == b"stbl":
                self.table = {}
                self.mp4(at + header, at + box, depth + 1)
                _check_chunks(self.table, self.size)
            elif depth < 16 and kind in _MP4_PARENTS:
                self.mp4(at + header, at + box, depth + 1, kind in (b"udta", b"ilst"))
            elif depth < 16 and kind == b"meta":  # a full box (four bytes of flags) in MP4, a plain one in QuickTime
                first = self.read(at + header, 8)
                self.mp4(at + header + (0 if first[4:8] == b"hdlr" else 4), at + box, depth + 1)
            elif kind == b"ID32" and box > header + 6:  # an ID3v2 tag after a full box's flags and a language
                self.id3v2(at + header + 6)
            elif kind == b"stsd":
                _check_alac(self.read(at + header, min(box - header, 1 << 16)))
            elif kind == b"keys":  # the names an ilst's items point to: a full box, a count, then the names
                count = int.from_bytes(self.read(at + header + 4, 4), "big")
                if count * 8 > box - header - 8:  # FFmpeg makes room for every name it states first
                    raise AudioError(f"its keys box claims {count} names, more than it holds")
                self.named += box
            elif kind in (b"stsz", b"trun"):
                body = self.read(at + header, 12)
                if len(body) == 12:
                    _check_samples(kind, body, box - header, self.size)
                    if kind == b"stsz":
                        self.table["sample size"] = int.from_bytes(body[4:8], "big")
            elif kind in (b"stco", b"co64"):
                self.table["chunks"] = int.from_bytes(self.read(at + header + 4, 4), "big")
            elif kind == b"stsc":
                self.table["stsc"] = self.read(at + header, box - header)
            at += box

    def mp4_elsewhere(self) -> None:
        """The boxes that hold tags wherever else they lie: FFmpeg reads boxes it knows inside
        more boxes than the walk enters (a sample description's extensions among them)."""
        for at in self._positions(_MP4_TAGGED):
            if at - 4 not in self.boxes and not self.full():
                head = self.read(at - 4, 16)
                box = int.from_bytes(head[:4], "big")
                if box == 1 and len(head) == 16:
                    box = int.from_bytes(head[8:16], "big")
                self.mp4(at - 4, self.size if box == 0 else min(self.size, at - 4 + box), 0)

    def _positions(self, pattern: re.Pattern, width: int = 4) -> Iterator[int]:
        """Where `pattern` (`width` bytes) occurs in the file, in order."""
        at, carry = 0, b""
        while True:
            self.f.seek(at)
            chunk = self.f.read(1 << 20)
            if not chunk:
                return
            data = carry + chunk
            found = [at - len(carry) + m.start() for m in pattern.finditer(data)]
            at += len(chunk)
            carry = data[-(width - 1):]
            yield from found

    def flac(self, at: int) -> None:
        """The comments in a FLAC's VORBIS_COMMENT blocks, and each metadata block as one more
        (FFmpeg reads every block, and every such block's comments, until the last; a real file
        has a handful). None if its metadata cannot be walked: FFmpeg then says what is wrong."""
        if self.read(at, 4) != b"fLaC":
            return
        at += 4
        while not self.full():
            header = self.read(at, 4)
            if len(header) < 4:
                return
            self.visit()
            self.tags += 1
            kind, size = header[0] & 0x7F, int.from_bytes(header[1:4], "big")
            if kind == 4:
                self.named += size
                vendor = int.from_bytes(self.read(at + 4, 4), "little")
                self.tags += int.from_bytes(self.read(at + 8 + vendor, 4), "little")
            if header[0] & 0x80:
                return
            at += 4 + size

    def asf(self) -> None:
        """Descriptors, records and markers in an ASF header's objects. FFmpeg reads objects up to
        the data object, whatever the header's size says, and the header extension's as its own."""
        if self.read(0, 16) != _ASF_HEADER:
            return
        at = 30
        while at + 24 <= self.size and not self.full():
            self.visit()
            head = self.read(at, 24)
            guid, size = head[:16], int.from_bytes(head[16:24], "little")
            if size < 24 or guid == _ASF_DATA:
                return
            if guid == _ASF_EXTENSION:
                at += 46  # its objects follow its own fields
                continue
            if guid in _ASF_COUNTED:
                self.named += size
                self.tags += int.from_bytes(self.read(at + _ASF_COUNTED[guid], 4 if guid == _ASF_MARKERS else 2),
                                            "little")
            at += size

    def ape(self) -> None:
        """Items in an APE tag at the file's end (FFmpeg reads one there for MP3 and ADTS)."""
        footer = self.read(self.size - 32, 32) if self.size >= 32 else b""
        if footer[:8] == b"APETAGEX":
            self.named += int.from_bytes(footer[12:16], "little")
            self.tags += int.from_bytes(footer[16:20], "little")


def _id3_header(head: bytes) -> bool:
    """Whether the ten bytes of `head`, which start with "ID3", are a tag's header by FFmpeg's test."""
    return 0xFF not in head[3:5] and not any(b & 0x80 for b in head[6:10])


def _syncsafe(data: bytes) -> int:
    return sum((b & 0x7F) << (7 * (len(data) - 1 - i)) for i, b in enumerate(data))


def _unsafe(size: int) -> int:
    """A 32-bit size read as ID3v2.4's syncsafe one (seven bits a byte)."""
    return (size & 0x7F) | ((size & 0x7F00) >> 1) | ((size & 0x7F0000) >> 2) | ((size & 0x7F000000) >> 3)


def _check_alac(description: bytes) -> None:
    """AudioError for an ALAC configuration in an MP4's sample description that gives frames
    over MAX_ALAC_FRAME samples: FFmpeg's decoder allocates buffers for the longest frame when
    it opens, before mimi sees the stream (16.7 M samples a channel, 0.5 GB for eight)."""
    at = description.find(b"alac", 4)
    while at >= 0:
        box = int.from_bytes(description[at - 4:at], "big")  # a box named alac: the sample entry, or its configuration
        length = int.from_bytes(description[at + 8:at + 12], "big")  # after the box's version and flags
        if 36 <= box <= len(description) - at + 4:
            check_alac_frame(length)
        at = description.find(b"alac", at + 4)


def check_alac_frame(length: int) -> None:
    """AudioError for an ALAC header's frame length over MAX_ALAC_FRAME samples."""
    if length > MAX_ALAC_FRAME:
        raise AudioError(f"its ALAC header gives frames of {length} samples (encoders write 4096; mimi reads up "
                         f"to {MAX_ALAC_FRAME})")


def _check_chunks(table: dict, size: int) -> None:
    """AudioError if an MP4 sample table of one sample size (as PCM's) claims more samples in its
    chunks than the file holds bytes: FFmpeg indexes such a table by chunks, splitting each into
    packets, so 84 chunks stated to hold a billion samples each took 2.9 GB in a 49 KB file."""
    stsc, chunks, sample_size = table.get("stsc", b""), table.get("chunks", 0), table.get("sample size", 0)
    if not sample_size or len(stsc) < 8:
        return
    runs = [(int.from_bytes(stsc[i:i + 4], "big"), int.from_bytes(stsc[i + 4:i + 8], "big"))
            for i in range(8, min(len(stsc), 8 + 12 * int.from_bytes(stsc[4:8], "big")) - 11, 12)]
    claimed = sum(max(0, (runs[i + 1][0] if i + 1 < len(runs) else chunks + 1) - first) * count
                  for i, (first, count) in enumerate(runs))
    if claimed * sample_size > 2 * size:
        raise AudioError(f"its sample table's chunks claim {claimed} samples, more than the file holds")


def _check_samples(kind: bytes, body: bytes, room: int, size: int) -> None:
    """An `stsz` or `trun` box's sample count against what the box and the file can hold. FFmpeg
    builds an index entry for every sample a table claims before it reads one: a 10 KB file whose
    constant sample size stands for 80 million samples would take gigabytes."""
    if kind == b"stsz":
        sample_size, count = int.from_bytes(body[4:8], "big"), int.from_bytes(body[8:12], "big")
        held = count * sample_size if sample_size else 4 * count - (room - 12)  # a table: 4 bytes each
        if (sample_size and held > size) or (not sample_size and held > 0):
            raise AudioError(f"its sample table claims {count} samples, more than the file holds")
    elif int.from_bytes(body[4:8], "big") > size:  # trun: every sample is at least a byte of data
        raise AudioError(f"a fragment claims {int.from_bytes(body[4:8], 'big')} samples, more than the file holds")


# Boxes FFmpeg reads as lists of boxes (as mov_read_default), and those that hold what it files as tags.
_MP4_PARENTS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts", b"udta", b"ilst",
                b"dinf", b"tref", b"mfra", b"sinf", b"schi", b"wave"}
# ID3 frames whose content FFmpeg makes a name of (a TXXX's description, a comment's, a PRIV's
# owner); other text frames are named by their four-letter id, and a chapter's text frames count
# on their own (its images do not).
_ID3_NAMED = {b"TXXX", b"TXX", b"COMM", b"COM", b"USLT", b"ULT", b"PRIV"}
_MP4_TAGGED = re.compile(b"udta|ilst|meta|ID32")


def _guid(text: str) -> bytes:
    """An ASF GUID's bytes as they lie in the file (its first three fields little-endian)."""
    return uuid.UUID(text).bytes_le


_ASF_HEADER = _guid("75B22630-668E-11CF-A6D9-00AA0062CE6C")
_ASF_DATA = _guid("75B22636-668E-11CF-A6D9-00AA0062CE6C")
_ASF_EXTENSION = _guid("5FBF03B5-A92E-11CF-8EE3-00C00C205365")
_ASF_MARKERS = _guid("F487CD01-A951-11CF-8EE6-00C00C205365")
# Objects that hold a count of what FFmpeg files as tags or chapters, and where it lies.
_ASF_COUNTED = {
    _guid("D2D0A440-E307-11D2-97F0-00A0C95EA850"): 24,  # extended content description: descriptors
    _guid("C5F8CBEA-5BAF-4877-8467-AA8C44FA4CCA"): 24,  # metadata: records
    _guid("44231C94-9498-49D1-A141-1D134E457054"): 24,  # metadata library: records
    _ASF_MARKERS: 40,  # markers, after 16 reserved bytes
}


class StreamTags:
    """The tags a stream's header holds, counted as its bytes go to FFmpeg (a stream cannot be
    walked before FFmpeg reads it): `feed` each piece before FFmpeg gets it, and AudioError once
    the count passes MAX_TAGS. Counting ends with `heard`, at the first decoded frame."""

    def __init__(self, demuxer: str) -> None:
        self.demuxer, self.done = demuxer, False
        self._head = io.BytesIO()  # MP3, ADTS, FLAC: walked again as it grows
        self._walked = 0
        self._ogg = _OggComments() if demuxer == "ogg" else None
        self._between = _TagsBetween() if demuxer == "aac" else None

    def feed(self, data: bytes) -> None:
        if self._between is not None and data and _over(*self._between.feed(data)):
            raise _refusal()
        if self.done or not data:
            return
        if self.demuxer == "matroska":
            return  # its tags are hidden from FFmpeg (`HiddenStream`)
        if self._ogg is not None:
            over = _over(*self._ogg.feed(data))
        else:
            self._head.seek(0, os.SEEK_END)
            self._head.write(data)
            size = self._head.tell()
            if size - self._walked < 1 << 16 and self._walked:
                return  # walked again every 64 KiB: FFmpeg files at most that much more in between
            self._walked = size
            over = _walk(self._head, self.demuxer, between=False).full()  # those between: `_TagsBetween`
        if over:
            self.heard()
            raise _refusal()

    def heard(self) -> None:
        self.done, self._head, self._ogg = True, io.BytesIO(), None

    @property
    def ended(self) -> bool:
        """Whether nothing more is counted (an ADTS stream's tags are, between its frames)."""
        return self.done and self._between is None


class _TagsBetween:
    """The ID3v2 tags of an ADTS stream, its first and those between its frames, taken whole as
    they pass (FFmpeg reads one between frames whole before it files its tags) and walked; their
    counts add up, as FFmpeg adds each tag's to the stream's one list."""

    def __init__(self) -> None:
        self._carry, self._tag, self._left, self._walked = b"", bytearray(), 0, 0
        self.tags = self.named = 0

    def feed(self, data: bytes) -> tuple[int, int]:
        """The tags and their name bytes so far, the tag that is arriving walked as far as it has
        come (every 64 KiB: where mimi stops the stream, FFmpeg files the part it was given)."""
        partial = (0, 0)
        while data:
            if self._left:
                piece, data = data[:self._left], data[self._left:]
                self._tag += piece
                self._left -= len(piece)
                if not self._left or len(self._tag) - self._walked >= 1 << 16:
                    walk = _Walk(io.BytesIO(bytes(self._tag)), len(self._tag))
                    walk.id3v2(0)
                    self._walked, partial = len(self._tag), (walk.tags, walk.named)
                if not self._left:
                    self.tags, self.named = self.tags + partial[0], self.named + partial[1]
                    self._tag, self._walked, partial = bytearray(), 0, (0, 0)
                continue
            joined = self._carry + data
            at = joined.find(b"ID3")
            if at < 0 or len(joined) - at < 10:
                at = at if at >= 0 else max(len(joined) - 2, 0)
                self._carry, data = joined[at:][-9:] if at < len(joined) else b"", b""
                continue
            head = joined[at:at + 10]
            if not _id3_header(head):
                self._carry, data = b"", joined[at + 1:]
                continue
            self._tag, self._left, self._carry = bytearray(head), _syncsafe(head[6:10]), b""
            if self._left > MAX_INFLATED:  # FFmpeg would read it whole into one packet
                return MAX_TAGS + 1, 0
            data = joined[at + 10:]
        return self.tags + partial[0], self.named + partial[1]


class _OggComments:
    """How many comments the comment headers of an Ogg stream's logical streams declare (Opus,
    Vorbis, FLAC), summed, read page by page as the bytes pass; a page is held until whole."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._streams: dict[int, _OggPacket] = {}
        self.comments = self.named = 0

    def feed(self, data: bytes) -> tuple[int, int]:
        """The comments the comment headers so far declare, and their bytes so far."""
        self._pending += data
        while len(self._pending) >= 27:
            if self._pending[:4] != b"OggS":  # FFmpeg searches for the next page: so does this
                at = self._pending.find(b"OggS", 1)
                del self._pending[:at if at > 0 else len(self._pending) - 3]
                continue
            segments = self._pending[26]
            if len(self._pending) < 27 + segments:
                break
            lacing = self._pending[27:27 + segments]
            end = 27 + segments + sum(lacing)
            if len(self._pending) < end:
                break
            serial = int.from_bytes(self._pending[14:18], "little")
            packet = self._streams.setdefault(serial, _OggPacket())
            if not self._pending[5] & 0x01:
                packet.start()  # not a continued packet
            at = 27 + segments
            for value in lacing:
                self.comments += packet.add(self._pending[at:at + value])
                self.named += value if packet.count_at is not None and packet.count_at >= 0 else 0
                at += value
                if value < 255:
                    packet.start()
            del self._pending[:end]
        return self.comments, self.named


class _OggPacket:
    """The packet of one logical stream that is arriving: its first bytes, and the comment count
    where it is a comment header (the count follows the vendor string, whatever its length)."""

    def __init__(self) -> None:
        self.flac, self.index = False, -1
        self.start()

    def start(self) -> None:
        if getattr(self, "length", 0):
            self.index += 1
        self.length, self.head, self.count_at, self.count = 0, bytearray(), None, bytearray()

    def add(self, piece: bytes) -> int:
        """Takes the packet's next bytes; gives the comments its count declares once it is read."""
        at, self.length = self.length, self.length + len(piece)
        if len(self.head) < 16:
            self.head += piece[:16 - len(self.head)]
            if self.index < 0 and self.head[:5] == b"\x7fFLAC":
                self.flac = True
        if self.count_at is None and len(self.head) >= 12:
            prefix = (8 if self.head[:8] == b"OpusTags" else 7 if self.head[:7] == b"\x03vorbis"
                      else 4 if self.flac and self.index >= 0 and self.head[0] & 0x7F == 4 else None)
            if prefix is None:
                self.count_at = -1  # not a comment header
            else:
                self.count_at = prefix + 4 + int.from_bytes(self.head[prefix:prefix + 4], "little")
        if self.count_at is None or self.count_at < 0 or len(self.count) == 4:
            return 0
        lo = max(self.count_at - at, 0)
        self.count += piece[lo:lo + 4 - len(self.count)] if at + len(piece) > self.count_at else b""
        return int.from_bytes(self.count, "little") if len(self.count) == 4 else 0


# Matroska's Tags, Chapters, Attachments and Cues: FFmpeg files what they hold with scans of what
# it filed before, and its costs multiply with their nesting (a SimpleTag's children, its language,
# each Tag's targets) and count (it converts the whole list again after each Tag; it inserts each
# cue into its index in order, so cues in falling order cost their square), so no count of them
# bounds its time. mimi reads none of them (it never seeks): FFmpeg is shown each under an id it does not
# know, and skips it, wherever it finds one (a SeekHead points to them; FFmpeg searches for them
# past damage).
_HIDDEN_IDS = (b"\x12\x54\xc3\x67", b"\x10\x43\xa7\x70", b"\x19\x41\xa4\x69", b"\x1c\x53\xbb\x6b")
_MATROSKA_HIDDEN = re.compile(b"|".join(re.escape(i) for i in _HIDDEN_IDS))
_UNKNOWN_ID = b"\x1f\x00\x00\x00"


def hidden(window: bytes) -> bytes:
    """`window` of a Matroska file as FFmpeg is shown it: every Tags, Chapters, Attachments and
    Cues id replaced by an id FFmpeg skips (the ids overlap nowhere, so any window of the file gives
    the same bytes where windows overlap)."""
    if not any(i in window for i in _HIDDEN_IDS):  # the common case, at the speed of a byte search
        return window
    return _MATROSKA_HIDDEN.sub(_UNKNOWN_ID, window)


class HiddenStream:
    """`hidden` for a stream read in pieces: the bytes that may begin an id are held back until
    the next piece says whether they do."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        """What of `data` (b"" at the stream's end) FFmpeg may be given now."""
        if not data:
            out, self._held = self._held, b""
            return out
        joined = hidden(self._held + data)
        keep = next((k for k in (3, 2, 1) if k <= len(joined) and any(i.startswith(joined[-k:]) for i in _HIDDEN_IDS)),
                    0)
        cut = len(joined) - keep
        self._held = joined[cut:]
        return joined[:cut]
