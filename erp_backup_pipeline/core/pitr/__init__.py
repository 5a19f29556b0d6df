"""PostgreSQL point-in-time recovery on pgBackRest: config.py writes its configuration, engine.py runs it
(backups, info, verify, WAL continuity), recover.py restores a cluster to a time, an LSN or the latest WAL.

pgBackRest does the physical backups, the WAL archive, compression, encryption and expiry; this
package never touches WAL itself. It runs pgbackrest as the data directory's owner.
"""
