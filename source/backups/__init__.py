"""Backups: pg_dump of the database plus an archive of the models, with a manifest of
checksums, verified by a real restore, restorable, and pruned to BACKUP_KEEP."""
