"""A one-line description of the machine, printed by every benchmark next to its figures."""

from __future__ import annotations

import os
import platform

# /proc/cpuinfo fields worth naming: cloud VMs often report only "AMD EPYC" as the model name, and then the family
# and model numbers are what tell machines apart (a family-23 EPYC simulated and trained ~3 x slower than a
# family-26 one in the README's measurements)
_CPUINFO_FIELDS = ("model name", "cpu family", "model")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``_CPUINFO_FIELDS`` from /proc/cpuinfo ({} where there is none)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                key = key.strip()
                if key in _CPUINFO_FIELDS and key not in found:
                    found[key] = value.strip()
    except OSError:
        pass
    return found


def describe_machine() -> str:
    info = _cpuinfo()
    cpu = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        cpu += f" (CPU family {info['cpu family']}, model {info.get('model', '?')})"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return f"{cpu}; {usable} usable cores; Python {platform.python_version()}; {platform.system()} {platform.release()}"
