"""Process measurement: wall time, peak RSS and CPU of commands, servers and the child Python, and staging.

- ``timed``: one command under ``/usr/bin/time`` (wall by perf_counter, peak RSS ``%M``, user+sys CPU). ru_maxrss
  of a child spawned directly from this Python would include this process's RSS (Linux carries the parent's
  high-water mark across vfork+exec), hence the wrapper.
- ``Sampler``: a thread that every 50 ms sums the file sizes under a staging dir and reads VmHWM/VmRSS of a
  process tree from /proc.
- ``server_cpu`` / ``redis_cpu``: CPU seconds of the PostgreSQL cluster (postmaster + reaped backends) and of the
  redis-server (+ its reaped snapshot fork).
- ``vm``: a field of /proc/self/status (the child's own VmRSS/VmHWM); ``tree_size``: bytes under a directory.
- ``run_case``: one repetition of one case, with the load average around it; ``median_cases``: the repetition
  with the median wall time stands for each case.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TIME_BIN = "/usr/bin/time"


def vm(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def proc_status(pid: int) -> dict[str, str]:
    """Name, VmHWM and VmRSS of a process from /proc (empty once it is gone)."""
    found: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("Name", "VmHWM", "VmRSS"):
                    found[k] = v.strip()
    except OSError:
        pass
    return found


def tree_size(path: Path) -> int:
    """Bytes of the files under ``path`` (a file that vanishes meanwhile counts 0)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class Sampler(threading.Thread):
    """Every ``interval`` s: total file size under ``staging``; VmHWM/VmRSS of ``root_pid`` and descendants."""

    def __init__(self, staging: Path | None = None, root_pid: int | None = None, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.staging = staging
        self.root_pid = root_pid
        self.interval = interval
        self.max_staging = 0
        self.hwm: dict[int, tuple[str, int]] = {}
        self.timeline: list[tuple[float, int, int]] = []  # (t, root VmRSS bytes, staging bytes)
        self._halt = threading.Event()
        self.t0 = time.time()

    def sample(self) -> None:
        import psutil

        staged = tree_size(self.staging) if self.staging is not None and self.staging.exists() else 0
        self.max_staging = max(self.max_staging, staged)
        root_rss = 0
        if self.root_pid:
            try:
                root = psutil.Process(self.root_pid)
                pids = [self.root_pid] + [c.pid for c in root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pids = []
            for pid in pids:
                st = proc_status(pid)
                if "VmHWM" not in st:
                    continue
                hwm = int(st["VmHWM"].split()[0]) * 1024
                if pid == self.root_pid:
                    root_rss = int(st["VmRSS"].split()[0]) * 1024
                name = st.get("Name", "?")
                self.hwm[pid] = (name, max(hwm, self.hwm.get(pid, (name, 0))[1]))
        self.timeline.append((round(time.time() - self.t0, 3), root_rss, staged))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        self._halt.set()
        self.join()
        self.sample()

    def peak_by_name(self, skip_root: bool = True) -> dict[str, int]:
        out: dict[str, int] = {}
        for pid, (name, hwm) in self.hwm.items():
            if skip_root and pid == self.root_pid:
                continue
            out[name] = max(out.get(name, 0), hwm)
        return out


def server_cpu(server: Any) -> float:
    """CPU seconds used so far by the cluster: postmaster + its reaped children (the backends).

    A backend's CPU reaches the postmaster's children totals only once the postmaster has reaped
    it, so first wait (up to 3 s) until every child but the cluster's long-lived auxiliary
    processes (checkpointer, walwriter, ...: the oldest children) is gone, zombies included.
    """
    import psutil

    pm = psutil.Process(server.pid)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        transient = []
        for c in pm.children():
            try:  # a backend: 'postgres: USER DB 127.0.0.1(PORT) ...'; an exiting one: empty cmdline or zombie
                cmd = " ".join(c.cmdline())
                if c.status() == psutil.STATUS_ZOMBIE or not cmd or "(" in cmd or "autovacuum worker" in cmd:
                    transient.append(c)
            except psutil.ZombieProcess:
                transient.append(c)
            except psutil.Error:
                pass
        if not transient:
            break
        time.sleep(0.02)
    t = pm.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def timed(argv: list[str], env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> dict[str, Any]:
    """Run one command under /usr/bin/time; wall (perf_counter), peak RSS, user+sys CPU."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        proc = subprocess.run([TIME_BIN, "-o", tf.name, "-f", "%M %U %S", *argv], env=env, stdout=stdout,
                              stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        fields = tf.read().strip().splitlines()[-1].split()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[-400:]}")
    return {"cmd": Path(argv[0]).name, "wall_s": wall, "peak_rss_bytes": int(fields[0]) * 1024,
            "cpu_s": float(fields[1]) + float(fields[2])}


def redis_cpu(server: Any) -> float:
    """CPU seconds of the redis-server so far, its reaped children (the snapshot fork) included.

    The server reaps its fork in its cron (10 Hz): first wait (up to 3 s) until it has no child.
    """
    import psutil

    proc = psutil.Process(server.proc.pid)
    deadline = time.monotonic() + 3
    while proc.children() and time.monotonic() < deadline:
        time.sleep(0.02)
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def run_case(runs: dict[str, list[dict[str, Any]]], key: str, fn: Any, rep: int, repeat: int) -> None:
    """Run one case once, note the load around it, and keep its result under ``key``."""
    print(f"[{rep + 1}/{repeat}] running {key} ...", end=" ", flush=True)
    load0 = os.getloadavg()[0]
    r = fn()
    r["loadavg_1m_before_after"] = [load0, os.getloadavg()[0]]
    runs.setdefault(key, []).append(r)
    print(f"{r['wall_s']:.2f} s", flush=True)


def median_cases(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per case, the repetition with the median wall time stands for it, with every repetition's wall time; for
    the pipeline cases (c_big, c7_big, cn_big, c_small, r1) the worst peak RSS (for the RSS target) and every
    repetition's staging minus artifact."""
    cases: dict[str, Any] = {}
    for key, rs in runs.items():
        chosen = dict(sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2])
        chosen["wall_s_all_runs"] = [round(r["wall_s"], 3) for r in rs]
        if key.startswith("c") or key == "r1":  # c_big, c7_big, c_small, r1
            chosen["peak_rss_bytes_all_runs"] = [r["peak_rss_bytes"] for r in rs]
            chosen["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rs)  # worst case for the RSS target
            chosen["staging_minus_artifact_all_runs"] = [r["max_staging_bytes"] - r["artifact_bytes"] for r in rs]
        cases[key] = chosen
    return cases
