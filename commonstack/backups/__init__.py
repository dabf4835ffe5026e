"""Backups seen from the volunteer's machine: running a backup now, listing snapshots, restoring
one onto a host, and the restore drill on a throwaway local host. The work on each host is
done by its backup script (templates/backup, deployed by deploys/backup.py)."""
