"""File formats: WIM, SDI, .secwim (and FFU/GPT in their own modules).

Parsers are pure functions of bytes that raise
:class:`~parallel_flash.errors.FormatError` naming the file, the field and the
problem; ``read_*`` helpers open a file and read only what they need.
"""

from __future__ import annotations

from ._files import check_output_path as check_output_path
from ._files import open_regular as open_regular
from .detect import FileType as FileType
from .detect import detect_file_type as detect_file_type
from .detect import detect_head as detect_head
from .sdi import SdiBlob as SdiBlob
from .sdi import SdiInfo as SdiInfo
from .sdi import build_sdi as build_sdi
from .sdi import check_sdi_for_wim_boot as check_sdi_for_wim_boot
from .sdi import parse_sdi as parse_sdi
from .sdi import read_sdi_info as read_sdi_info
from .secwim import SecWimInfo as SecWimInfo
from .secwim import build_secwim as build_secwim
from .secwim import parse_secwim as parse_secwim
from .secwim import parse_secwim_tail as parse_secwim_tail
from .secwim import read_secwim_info as read_secwim_info
from .wim import WimInfo as WimInfo
from .wim import check_boot_payload as check_boot_payload
from .wim import parse_wim_header as parse_wim_header
from .wim import read_wim_info as read_wim_info
from .wim_integrity import verify_integrity as verify_integrity

__all__ = (
    "FileType",
    "SdiBlob",
    "SdiInfo",
    "SecWimInfo",
    "WimInfo",
    "build_sdi",
    "build_secwim",
    "check_boot_payload",
    "check_output_path",
    "check_sdi_for_wim_boot",
    "detect_file_type",
    "detect_head",
    "open_regular",
    "parse_sdi",
    "parse_secwim",
    "parse_secwim_tail",
    "parse_wim_header",
    "read_sdi_info",
    "read_secwim_info",
    "read_wim_info",
    "verify_integrity",
)
