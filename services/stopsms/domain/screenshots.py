"""A citizen's screenshot of a complained-of SMS: checked to be an image, stripped of metadata.

Only PNG and JPEG are taken, at most :data:`MAX_BYTES`. The file is read structurally — every
PNG chunk with its CRC, every JPEG segment up to the image data — so that anything that is not
one well-formed image is refused, and everything that is not the picture itself goes: PNG text,
time and EXIF chunks; JPEG EXIF/XMP (APP1), other application segments and comments. What a
phone writes there (its owner's name, the place, the device) is not evidence of the SMS, and is
personal. The picture's pixels are kept as they are: the evidence is what the citizen saw.
"""

from __future__ import annotations

import struct
import zlib

MAX_BYTES = 2 * 1024 * 1024
#: Largest width or height accepted (a phone screen, generously).
MAX_SIDE = 20_000

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that make the picture; every other (tEXt, iTXt, zTXt, eXIf, tIME, ...) goes.
PNG_KEPT = {b"IHDR", b"PLTE", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"IDAT", b"IEND"}
#: JPEG segments kept before the image data: the tables and frame, JFIF (APP0), the colour
#: profile (APP2 ICC_PROFILE) and Adobe's colour transform (APP14).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_TABLES = {0xC4, 0xCC, 0xDB, 0xDD} | _SOF


class InvalidImage(ValueError):
    """Not one well-formed PNG or JPEG image (the message says what is wrong)."""


def clean_image(data: bytes) -> tuple[str, bytes]:
    """(``"png"`` or ``"jpeg"``, the image without its metadata); raises InvalidImage."""
    if not data:
        raise InvalidImage("the file is empty")
    if len(data) > MAX_BYTES:
        raise InvalidImage(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB")
    if data.startswith(PNG_SIGNATURE):
        return "png", _clean_png(data)
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg", _clean_jpeg(data)
    raise InvalidImage("only PNG and JPEG images are accepted")


def _clean_png(data: bytes) -> bytes:
    out = bytearray(PNG_SIGNATURE)
    at, seen_header, seen_data = len(PNG_SIGNATURE), False, False
    while True:
        if at + 8 > len(data):
            raise InvalidImage("the PNG ends before its IEND chunk")
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(data):
            raise InvalidImage("a PNG chunk runs past the end of the file")
        body = data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : end])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise InvalidImage(f"the PNG chunk {kind!r} is damaged (CRC)")
        if not seen_header:
            if kind != b"IHDR" or length != 13:
                raise InvalidImage("a PNG starts with its IHDR chunk")
            width, height = struct.unpack(">II", body[:8])
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise InvalidImage("the image's size is not plausible")
            seen_header = True
        if kind == b"IDAT":
            seen_data = True
        if kind in PNG_KEPT:
            out += data[at:end]
        at = end
        if kind == b"IEND":
            break
    if not seen_data:
        raise InvalidImage("the PNG has no image data")
    return bytes(out)


def _clean_jpeg(data: bytes) -> bytes:
    out = bytearray(b"\xff\xd8")
    at, seen_frame = 2, False
    while True:
        if at + 4 > len(data) or data[at] != 0xFF:
            raise InvalidImage("the JPEG's segments are malformed")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if length < 2 or end > len(data):
            raise InvalidImage("a JPEG segment runs past the end of the file")
        body = data[at + 4 : end]
        if marker in _SOF:
            if length < 8:
                raise InvalidImage("the JPEG's frame header is too short")
            height, width = struct.unpack(">HH", body[1:5])
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise InvalidImage("the image's size is not plausible")
            seen_frame = True
        keep = (
            marker in _JPEG_TABLES
            or marker == 0xE0
            and body.startswith(b"JFIF\x00")
            or marker == 0xE2
            and body.startswith(b"ICC_PROFILE\x00")
            or marker == 0xEE
            and body.startswith(b"Adobe")
        )
        if marker == 0xDA:  # start of scan: the picture, to the end of the file
            if not seen_frame:
                raise InvalidImage("the JPEG has no frame header before its image data")
            if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise InvalidImage("the JPEG does not end with its end-of-image marker")
            out += data[at:]
            return bytes(out)
        if keep:
            out += data[at:end]
        at = end
