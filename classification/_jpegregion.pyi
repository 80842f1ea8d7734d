"""Type stub for the C extension built from _jpegregion.c (see its header comment)."""

LIBJPEG_VERSION: int

def decode_region(data: bytes, left: int, top: int, right: int, bottom: int,
                  scale: int = 1, /) -> tuple[bytes, str, int, int, int, int]: ...
