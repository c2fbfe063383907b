"""What a result needs beside it to be reproduced: versions, git commit, machine, command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent  # the edgelesion package folder

TRACKED_PACKAGES = (
    "numpy",
    "pillow",
    "onnxruntime",
    "ai-edge-litert",
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "onnx",
    "Augmentor",
    "imagehash",
    "scikit-learn",
    "scipy",
    "matplotlib",
)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries edgelesion's results depend on (None if absent)."""
    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "edgelesion": metadata.version("edgelesion"),
    }
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The commit of the edgelesion source in use, with '-dirty' if it has uncommitted changes."""
    source = PACKAGE_ROOT.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name as the OS reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# x86 "flags" and ARM "Features" in /proc/cpuinfo: asimddp is ARM's int8 dot product, i8mm its int8 matrix multiply
SIMD_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "i8mm",
)


def cpu_flags() -> list[str]:
    """The vector-instruction flags that decide float and int8 CPU speed (from /proc/cpuinfo)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in SIMD_FLAGS if flag in present]
    except OSError:
        pass
    return []


# CPU flags (/proc/cpuinfo) of int8 dot-product instructions, with their names
X86_DOT_PRODUCT_FLAGS = (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"))
ARM_DOT_PRODUCT_FLAGS = (("i8mm", "ARM int8 matrix multiply (i8mm)"), ("asimddp", "ARM dot product (asimddp)"))


def int8_instructions(flags: list[str]) -> str:
    """What this CPU has for int8 dot products, and what that means for int8 speed against float32."""
    named = [name for flag, name in X86_DOT_PRODUCT_FLAGS + ARM_DOT_PRODUCT_FLAGS if flag in flags]
    if named:
        return f"{', '.join(named)}: int8 dot products in one instruction, so int8 models can run well ahead of float32"
    if "avx2" in flags:
        return (
            "AVX2 only (no VNNI): 8-bit products are added in pairs into 16 bits and widened in extra steps, "
            "so int8 runs at best a little faster than float32 here, often no faster"
        )
    return "no int8 dot-product instructions detected"


def int8_cpu_kind(flags: list[str]) -> str:
    """A short name for what decides int8 speed on this CPU: 'amx' (x86 int8 matrix tiles), 'vnni' (x86 dot
    products without AMX), 'armdot', 'avx2' or 'cpu'."""
    if "amx_int8" in flags:
        return "amx"
    if any(flag in flags for flag, _ in X86_DOT_PRODUCT_FLAGS):
        return "vnni"
    if any(flag in flags for flag, _ in ARM_DOT_PRODUCT_FLAGS):
        return "armdot"
    return "avx2" if "avx2" in flags else "cpu"


def machine_info() -> dict[str, Any]:
    """CPU model, its SIMD flags, core count and OS of this machine."""
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "platform": platform.platform()}


def _without_machine_path(argument: str) -> str:
    """An absolute path (alone or as --option=PATH) reduced to its last part."""
    option, equals, value = argument.partition("=") if argument.startswith("-") else ("", "", argument)
    return option + equals + (Path(value).name if Path(value).is_absolute() else value)


def provenance(portable: bool = False) -> dict[str, Any]:
    """Command line, time, git commit, machine and library versions, for a results folder; `portable` names each
    absolute path of the command line by its last part only (for files that leave the machine)."""
    arguments = [_without_machine_path(arg) if portable else arg for arg in sys.orig_argv[1:]]
    return {
        "command": shlex.join([Path(sys.orig_argv[0]).name, *arguments]),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "versions": library_versions(),
    }
