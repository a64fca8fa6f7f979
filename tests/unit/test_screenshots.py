"""Screenshots: only a well-formed PNG or JPEG, and nothing but the picture kept."""

from __future__ import annotations

import struct
import zlib

import pytest

from stopsms.domain.screenshots import MAX_BYTES, InvalidImage, clean_image

NUMBER = b"+212612345678"


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(*extra: bytes) -> bytes:
    """A 1x1 grey PNG, with extra chunks after IHDR."""
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(b"\x00\x80"))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(extra) + pixels + chunk(b"IEND", b"")


def jpeg(*extra: bytes) -> bytes:
    """The skeleton of a baseline JPEG: SOI, extra segments, tables, frame, scan, EOI."""

    def segment(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

    return (
        b"\xff\xd8"
        + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + b"".join(extra)
        + segment(0xDB, b"\x00" + bytes(64))
        + segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00")
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x12\x34\xff\xd9"
    )


def exif_segment(text: bytes) -> bytes:
    body = b"Exif\x00\x00" + text
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def test_a_png_loses_its_text_and_time_but_keeps_its_picture() -> None:
    original = png(chunk(b"tEXt", b"Author\x00" + NUMBER), chunk(b"tIME", bytes(7)))
    kind, cleaned = clean_image(original)
    assert kind == "png"
    assert NUMBER not in cleaned and b"tEXt" not in cleaned and b"tIME" not in cleaned
    assert cleaned == png()


def test_a_jpeg_loses_its_exif_and_comments_but_keeps_its_picture() -> None:
    comment = b"\xff\xfe" + struct.pack(">H", len(NUMBER) + 2) + NUMBER
    original = jpeg(exif_segment(b"GPS owner " + NUMBER), comment)
    kind, cleaned = clean_image(original)
    assert kind == "jpeg"
    assert NUMBER not in cleaned and b"Exif" not in cleaned
    assert cleaned == jpeg()


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"GIF89a" + bytes(20), "only PNG and JPEG"),
        (png()[:-5], "damaged|ends before"),
        (png().replace(b"IDAT", b"IDAX"), "damaged"),
        (jpeg()[:-2], "end-of-image"),
        (
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 1, 8, 0, 0, 0, 0)),
            "size",
        ),
        (b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), "larger than"),
    ],
)
def test_anything_but_one_well_formed_image_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(InvalidImage, match=why):
        clean_image(data)
