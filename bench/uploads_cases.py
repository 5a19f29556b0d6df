"""The uploads cases: a generated tree of 10,000 files (~1 GB), backed up three times by the pipeline and copied
three times the original way (rsync into a local directory), one scenario per repetition with a fresh tree,
``state_dir``, bucket and rsync destination:

  (u1) pipeline  first ``uploads_snapshot`` backup, materialized like (c); shipped bytes = ``encrypted_bytes``
  (u2) pipeline  the same again, tree unchanged (same ``state_dir``: the backup is incremental)
  (u3) pipeline  the same again after 100 files (1 %) were changed
  (s1) original  ``rsync -a --stats SRC/ DST/day1/``
  (s2) original  ``rsync -a --stats --link-dest=DST/day1 SRC/ DST/day2/``, tree unchanged
  (s3) original  ``rsync -a --stats --link-dest=DST/day2 SRC/ DST/day3/`` after the same 1 % change
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.child import materialize_case
from bench.common import MB
from bench.data import generate_uploads_tree, modify_uploads_tree
from bench.measure import run_case, timed

if TYPE_CHECKING:
    from bench.context import Bench


def case_u(bench: Bench, label: str, public_key: str, tree: Path, state_dir: Path, bucket: str) -> dict[str, Any]:
    """(u1)-(u3): ``uploads_snapshot`` of ``tree`` into ``bucket``, incremental through ``state_dir``."""
    r = materialize_case(bench, "", label, public_key, asset="uploads_snapshot", sources={"uploads": {"path": str(tree)}},
                         bucket=bucket, extra_config={"state_dir": str(state_dir)})
    state = state_dir / "uploads_snapshot.json"
    r["state_file_bytes"] = state.stat().st_size if state.exists() else 0
    return r


def case_s(bench: Bench, tree: Path, dest: Path, day: str, link_dest: str | None) -> dict[str, Any]:
    """(s1)-(s3): ``rsync -a --stats [--link-dest=DST/link_dest] SRC/ DST/day/``; shipped bytes = rsync's
    "Total transferred file size", checked against the files of DST/day that are not hard links."""
    target = dest / day
    argv = ["rsync", "-a", "--stats"] + ([f"--link-dest={dest / link_dest}"] if link_dest else []) \
        + [f"{tree}/", f"{target}/"]
    stats_path = bench.tmp / f"rsync-{day}.stats"
    with open(stats_path, "w") as fh:
        r = timed(argv, dict(os.environ), stdout=fh)
    stats = stats_path.read_text()

    def stat_int(label: str) -> int:
        m = re.search(rf"^{re.escape(label)}: ([\d,]+)", stats, re.M)
        if m is None:
            raise RuntimeError(f"rsync --stats printed no '{label}':\n{stats}")
        return int(m.group(1).replace(",", ""))

    new_bytes = new_files = linked = 0  # files of this day that are not hard links to an earlier day
    for root, _dirs, files in os.walk(target):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if st.st_nlink == 1:
                new_bytes += st.st_size
                new_files += 1
            else:
                linked += 1
    transferred = stat_int("Total transferred file size")
    return {"wall_s": r["wall_s"], "artifact_bytes": transferred, "peak_rss_bytes": r["peak_rss_bytes"],
            "client_cpu_s": r["cpu_s"], "server_cpu_s": 0.0, "max_staging_bytes": 0,
            "rsync_files_transferred": stat_int("Number of regular files transferred"),
            "new_unlinked_bytes": new_bytes, "new_unlinked_files": new_files, "hardlinked_files": linked,
            "argv": " ".join(argv[:-2] + ["SRC/", f"DST/{day}/"]).replace(str(dest), "DST")}


def uploads_scenario(bench: Bench, runs: dict[str, list[dict[str, Any]]], public_key: str, rep: int,
                     repeat: int) -> dict[str, Any]:
    """(u1), (u2), (s1), (s2); change 1 % of the files; (u3), (s3). Fresh tree, state, bucket, DST."""
    base = bench.tmp / f"uploads-{rep}"
    tree, state_dir, dest = base / "tree", base / "state", base / "rsync-dest"
    tree.mkdir(parents=True)
    dest.mkdir()
    info = generate_uploads_tree(tree)
    files = info.pop("file_list")
    print(f"uploads: generated {info['files']:,} files ({info['scan_files']} scans of 1-10 MB), "
          f"{info['bytes']:,} bytes ({info['bytes'] / MB:.0f} MiB) in {info['dirs']} directories in "
          f"{info['generate_s']} s", flush=True)
    bucket = f"bench-uploads-{rep}-{int(time.time())}"
    for key, fn in (("u1", lambda: case_u(bench, f"uploads{rep}-u1", public_key, tree, state_dir, bucket)),
                    ("u2", lambda: case_u(bench, f"uploads{rep}-u2", public_key, tree, state_dir, bucket)),
                    ("s1", lambda: case_s(bench, tree, dest, "day1", None)),
                    ("s2", lambda: case_s(bench, tree, dest, "day2", "day1"))):
        run_case(runs, key, fn, rep, repeat)
    info["changed"] = modify_uploads_tree(files)
    ch = info["changed"]
    print(f"uploads: changed {ch['files']} files ({ch['appended']} appended to, {ch['rewritten']} rewritten in "
          f"place; {ch['changed_scans']} of them scans): {ch['changed_bytes']:,} bytes", flush=True)
    for key, fn in (("u3", lambda: case_u(bench, f"uploads{rep}-u3", public_key, tree, state_dir, bucket)),
                    ("s3", lambda: case_s(bench, tree, dest, "day3", "day2"))):
        run_case(runs, key, fn, rep, repeat)
        runs[key][-1]["changed_bytes"] = ch["changed_bytes"]
    if not bench.args.keep:
        shutil.rmtree(base, ignore_errors=True)
    return info


def uploads_section(bench: Bench, runs: dict[str, list[dict[str, Any]]], public: str, repeat: int) -> dict[str, Any]:
    """``repeat`` scenarios; ``results["uploads"]``: the last one's tree, and the section's seconds."""
    if shutil.which("rsync") is None:
        sys.exit("rsync (Debian package 'rsync') is needed for the uploads baseline; or use --skip-uploads")
    t_up = time.perf_counter()
    for rep in range(repeat):
        info = uploads_scenario(bench, runs, public, rep, repeat)
    info["section_s"] = round(time.perf_counter() - t_up, 1)
    print(f"uploads section took {info['section_s']} s", flush=True)
    return info
