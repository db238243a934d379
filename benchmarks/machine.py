"""The line every benchmark report starts with: what machine the numbers come from."""

import os
import platform


def describe() -> str:
    """``"x86_64, 2 cores, 24 GiB"``: architecture, logical cores, physical memory."""
    try:
        ram = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB"
    except (ValueError, OSError):
        ram = "unknown RAM"
    return f"{platform.machine()}, {os.cpu_count()} cores, {ram}"
