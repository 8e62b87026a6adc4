"""Machine description and calibration figures shared by the benchmarks.

``calibration()`` times two fixed workloads on ONE thread so that numbers from different machines
(or the same machine under different load) can be put side by side: a 512^3 float32 matrix
product (GFLOP/s, compute bound) and a 64 MiB float32 copy (GB/s, memory bound). Divide a
benchmark's time by the ratio of calibration figures to compare machines (roughly).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return sorted(f for f in ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl") if f in have)
    except OSError:
        pass
    return []


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def calibration(repeats: int = 5) -> dict[str, float]:
    """Single-thread medians: ``matmul_gflops`` (512^3 sgemm) and ``copy_gbps`` (64 MiB copy)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.rand(512, 512)
        b = torch.rand(512, 512)
        x = torch.rand(16 * 1024 * 1024)
        y = torch.empty_like(x)
        a @ b
        y.copy_(x)
        mm, cp = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(4):
                a @ b
            mm.append((time.perf_counter() - t) / 4)
            t = time.perf_counter()
            y.copy_(x)
            cp.append(time.perf_counter() - t)
        mm.sort()
        cp.sort()
        return {"matmul_gflops": round(2 * 512**3 / mm[len(mm) // 2] / 1e9, 2),
                "copy_gbps": round(2 * x.numel() * 4 / cp[len(cp) // 2] / 1e9, 2)}
    finally:
        torch.set_num_threads(n)


def machine(load_before: tuple[float, float, float], load_after: tuple[float, float, float]) -> dict:
    """The ``machine`` record of a benchmark's JSON."""
    info = {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "uptime": uptime(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def write_record(out: Path, rec: dict, table_md: str) -> None:
    """Write a diagnosis's JSON record to ``out`` and its Markdown table (headed by ``rec["what"]``
    and ``rec["note"]``) beside it as ``.md``, each atomically; print the table."""
    import json

    from hravatar.io.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(rec, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), f"# {rec['what']}\n\n{rec['note']}\n\n{table_md}")
    print(table_md)
