"""Side-by-side benchmark of the PostgreSQL backup, in ONE run, on a generated ERP-like database.

    .venv/bin/python -m bench [--size-mb 500] [--small-mb 250] [--out bench/out] [--repeat N] [--keep] [--profile]
                              [--skip-redis] [--skip-uploads] [--skip-pitr] [--skip-pg] [--skip-recovery]
                              [--pitr-writer-s 75]

(``make bench`` runs it with ``--repeat 3``; ``python bench/bench.py`` is the same, as a script.)

Cases (all against the same throwaway PostgreSQL 15 cluster, on loopback):
  (a) floor      ``pg_dump -Fc -Z0 > /dev/null``
  (b) original   ``pg_dump -Fc -f F`` ; ``gzip F`` ; ``gpg --encrypt F.gz`` ; ``cp F.gz.gpg DEST/``
  (c) pipeline   ``postgres_dump`` materialized in-process (Dagster ``materialize``) to a moto S3 server
                 running in its own process, with verify and age encryption; timed around
                 ``materialize`` only, in a child Python process so its peak RSS is its own.
                 Compression: the default ``{codec: zstd, level: 3, threads: 2}``. On the big database its
                 bucket first holds 30 earlier signed captures (``seed_history``): the run authenticates a
                 month's catalog. Its ``signing_seconds`` plus the signature code's import in a fresh
                 interpreter (``python -X importtime``) against its time is the signing share (< 1 %).
  (c7) pipeline  the same as (c) on the big database, with ``{codec: zstd, level: 7, threads: 2}``: shows
                 that the artifact size of (b) is reachable by configuration, and what it costs in time.
                 Reported as its own row; the targets stay evaluated on the default (c).
  (cn) pipeline  the same as (c) with ``sources.postgres.exact_row_counts: false``: what counting every
                 table's rows in pg_dump's snapshot (for the restore drill) costs.

Redis cases (a throwaway redis-server 1 M keys of session/cache shape, filled by pipelined writes;
``--skip-redis`` leaves them out). ``repl-diskless-sync-delay`` is set to 0 on that server first:
``redis-cli --rdb`` asks for a diskless sync, which otherwise waits 5 s for more replicas; the cases
compare the dumpers, not that delay.
  (r0) floor     ``redis-cli -h 127.0.0.1 -p PORT --rdb FILE``; artifact = the RDB file.
  (r1) pipeline  ``redis_snapshot`` materialized exactly like (c) (child process, moto S3, age, the
                 default compression); timed around ``materialize``.

Uploads cases (``--skip-uploads`` leaves them out): a generated tree of 10,000 files (seeded: ~9,900
PDF-like files of 1-50 KB, mostly random bytes with some PDF text, and ~135 JPEG-like scans of
1-10 MB; ~1 GB in ~350 nested directories, mtimes in the past). One scenario per repetition, with
a fresh ``state_dir``, bucket and rsync destination:
  (u1) pipeline  first ``uploads_snapshot`` backup, materialized exactly like (c) (child process, moto S3,
                 age, the default compression); shipped bytes = the artifact's ``encrypted_bytes``.
  (u2) pipeline  the same again, tree unchanged (same ``state_dir``: the backup is incremental).
  (u3) pipeline  the same again after 100 files (1 %) were changed (half appended to, half rewritten
                 in place); changed bytes = the sizes of those files.
  (s1) original  ``rsync -a --stats SRC/ DST/day1/`` (a local directory: the original strategy's method)
  (s2) original  ``rsync -a --stats --link-dest=DST/day1 SRC/ DST/day2/``, tree unchanged
  (s3) original  ``rsync -a --stats --link-dest=DST/day2 SRC/ DST/day3/`` after the same 1 % change
                 For rsync, shipped bytes = its "Total transferred file size" (checked against the
                 sizes of the files in DST/dayN that are not hard links). (s1)-(s2) run after (u2),
                 (s3) after (u3); the tree is in the page cache for all of them.

Point-in-time recovery (pgBackRest; ``--skip-pitr`` leaves it out; run once, whatever ``--repeat`` says, about
3 minutes). Set up with the project's own code (``core.pitr.config`` writes pgbackrest.conf and gives the
postgresql.conf lines, ``archive_timeout = 60``; ``PgBackRest`` runs stanza-create, check and backups;
``recover.plan_restore`` + ``recover.restore`` restore), as the ``postgres`` user, in a 0755 /tmp dir: a third
cluster, archiving from the start, filled with the same ERP-like generator to ``--size-mb``; a full backup
(repository cipher on); a ``pg_dump -Fc`` of that state.
  (p0) baseline  ``pg_restore`` of that local dump into a new database on the bench's first (non-archiving)
                 cluster; only pg_restore is timed.
  (p1) RTO       after the full backup, writes (5 % of the invoices updated, 100,000 audit rows), a target time
                 T, writes after T, a WAL switch: ``plan_restore(target_time=T)`` + ``restore(start=True)`` into
                 a new data directory (restore = download, decompress, decrypt; then WAL replay to T and
                 promotion), timed until the server has promoted; checked: the rows before T, none after.
  (p2) RPO       a WAL switch, then a writer commits one row holding its ``clock_timestamp()`` every 0.1 s for
                 ``--pitr-writer-s`` (75) s, no forced switch; the writer stops and the host is lost at C (the
                 cluster's process group SIGKILLed: no shutdown checkpoint, the open segment is never archived);
                 ``restore`` ``--latest`` into a new data directory; RPO = C - newest recovered commit time
                 (target <= 60 s), rows lost = committed - recovered.

Whole-ERP recovery (``--skip-recovery`` leaves it out; run once; alone, with every other ``--skip-*``, it
generates only the big database): the demo ERP's stores backed up once to the moto S3 server with age
encryption, in-process (``run_backup``): ``postgres_dump`` of the big ERP-like database (the one of (c)),
``redis_snapshot`` of a small redis-server (10,000 keys of the same shape), ``config_archive`` and
``uploads_snapshot`` of the demo ERP's config and uploads (``core.demo``, plus 200 PDF-like files), no SQLite;
``recovery.document_references`` names 20 documents from the invoices table. Then
``erp-backup recover``'s code (``plan_recovery`` + ``recover``) into a new directory and a new database:
  (w)  each store's restore seconds (download, checksum, decrypt, decompress, load; Redis: the snapshot
       written and a redis-server started on it, loaded), their total (the measured RTO), and the
       consistency checks' seconds (rows counted in the restored database, the uploads snapshot read once
       more for its recorded checksums). Everything it started is stopped by PID and the database dropped.

Measurements
  wall        perf_counter around the command(s) / around ``materialize``
  peak RSS    (a),(b): ``/usr/bin/time -f %M`` per command (ru_maxrss of a child spawned directly
              from this Python would include this process's RSS: Linux carries the parent's high-water
              mark across vfork+exec). (c): VmHWM of the child Python itself (read from /proc at the
              end); its pg_dump/pg_restore children are sampled from /proc every 50 ms.
  server CPU  CPU seconds of the PostgreSQL cluster during the case (postmaster + reaped backends);
              for (r0)/(r1) of the redis-server (+ its reaped snapshot child).
  staging     the parent sums the sizes of the files under the staging dir every 50 ms; max reported.

Prints a table, writes ``OUT/results.json`` and ``OUT/results.md``. Exit code 0 even when a
target fails (it is a report). Everything it starts (PostgreSQL, Redis, moto, gpg-agent, the restored PITR
clusters) is stopped by PID or by its own tool (``pg_ctl -D``), also on failure, and every temp dir is removed.

The package: ``cli`` (options, the run), ``context`` (``Bench``: servers, temp dirs, teardown), ``data`` (the
generated ERP-like database, Redis keys, uploads tree), ``measure`` (timed, Sampler, server CPU, medians),
``child`` (the materialize in a child Python), the case families ``dump_cases``, ``signing_cases``,
``redis_cases``, ``uploads_cases``, ``pitr_cases``, ``recovery_cases``, and ``report`` (targets, tables,
results.md). Dated figures are in ``bench/results/``.
"""
