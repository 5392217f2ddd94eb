"""Device identity and NVML telemetry (nvidia-ml-py), sampled in the background while timing runs.

Absent NVML (no driver, CPU-only machine) means no telemetry, never an error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import threading
from typing import Any

# Clock-event (throttle) reason bits, named as NVML's nvmlClocksEventReason* constants.
_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    names = [name for bit, name in _REASONS.items() if mask & bit]
    known = 0
    for bit in _REASONS:
        known |= bit
    if mask & ~known:
        names.append(f"other_0x{mask & ~known:x}")
    return names


def cpu_name(threads: int) -> str:
    """An honest label for a CPU 'device', so nobody mistakes the profile for a GPU's."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine() or "unknown"
    return f"CPU: {model} (torch threads: {threads})"


def _nvml():
    """The initialised pynvml module, or None where NVML cannot be used."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no driver, no library, container without NVML: telemetry is optional
        return None


def nvml_handle(uuid: str | None, pci_bus_id: str | None = None):
    """(pynvml, handle) for the device with this UUID (else PCI bus id), or None.

    UUIDs tie a torch device to its NVML device whatever CUDA_VISIBLE_DEVICES renumbers.
    """
    if not uuid and not pci_bus_id:
        return None
    nv = _nvml()
    if nv is None:
        return None
    for lookup, key in ((nv.nvmlDeviceGetHandleByUUID, uuid), (_by_pci(nv), pci_bus_id)):
        if key:
            with contextlib.suppress(Exception):
                return nv, lookup(key)
    return None


def _by_pci(nv: Any):
    return getattr(nv, "nvmlDeviceGetHandleByPciBusId_v2", None) or nv.nvmlDeviceGetHandleByPciBusId


def read_once(nv: Any, handle: Any) -> dict[str, Any]:
    """One NVML reading; a field the driver does not support is left out."""
    out: dict[str, Any] = {}
    calls = {
        "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM),
        "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_MEM),
        "power_w": lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1000.0,
        "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
        "temp_c": lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU),
        "reasons": lambda: _reasons_mask(nv, handle),
    }
    for key, fn in calls.items():
        # NVMLError_NotSupported and friends vary by board and driver
        with contextlib.suppress(Exception):
            out[key] = fn()
    return out


def _reasons_mask(nv: Any, handle: Any) -> int:
    fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if fn is None:  # older nvidia-ml-py names it "throttle reasons"
        fn = nv.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(fn(handle))


class TelemetrySampler:
    """Sample NVML every `period_s` in a thread between start() and stop(); summarise the window."""

    def __init__(self, uuid: str | None, pci_bus_id: str | None = None, period_s: float = 0.2):
        found = nvml_handle(uuid, pci_bus_id)
        self._nv: Any = found[0] if found else None
        self._handle: Any = found[1] if found else None
        self.period_s = period_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        if not self.available:
            return
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self.samples.append(read_once(self._nv, self._handle))
            if self._stop.wait(self.period_s):
                return

    def stop(self) -> dict[str, Any] | None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return summarize(self.samples) if self.samples else None


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Median clocks, mean and peak power, peak temperature, every throttle reason seen."""
    out: dict[str, Any] = {}

    def values(key: str) -> list[float]:
        return [s[key] for s in samples if key in s]

    for key in ("sm_clock_mhz", "mem_clock_mhz"):
        if values(key):
            out[key] = int(statistics.median(values(key)))
    if values("power_w"):
        out["power_w"] = round(statistics.fmean(values("power_w")), 1)
        out["power_peak_w"] = round(max(values("power_w")), 1)
    if values("power_limit_w"):
        out["power_limit_w"] = round(values("power_limit_w")[-1], 1)
    if values("temp_c"):
        out["temp_c"] = int(max(values("temp_c")))
    mask = 0
    for m in values("reasons"):
        mask |= int(m)
    if values("reasons"):
        out["clock_event_reasons"] = reason_names(mask & ~0x1)  # idle between samples is noise
    out["samples"] = len(samples)
    return out


def cuda_uuid(index: int) -> str | None:
    """NVML-style UUID of torch's CUDA device `index` ("GPU-<uuid>")."""
    import torch

    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return None if uuid is None else f"GPU-{uuid}"


def cuda_pci_bus_id(index: int) -> str | None:
    """NVML's PCI bus id form ("00000000:18:00.0") of torch's CUDA device `index`."""
    import torch

    p = torch.cuda.get_device_properties(index)
    bus, dev = getattr(p, "pci_bus_id", None), getattr(p, "pci_device_id", None)
    if bus is None or dev is None:
        return None
    return f"{getattr(p, 'pci_domain_id', 0):08x}:{bus:02x}:{dev:02x}.0"


def cpu_threads_for(local_world: int) -> int:
    """Threads per process when several processes share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, local_world))
