"""Where the layers keep things on a host: one place for the deploys that write them, the checks
that read them and the backups that save them."""

from __future__ import annotations

import re

STATE_DIR = "/var/lib/commonstack"  # the kit's own records on the host (root only)

# caddy
CADDY_DATA = "/var/lib/caddy"  # its certificates, ACME account and local CA
CADDY_LOCAL_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"  # tls.mode internal

# redis
REDIS_SOCKET = "/run/redis/redis-server.sock"

# synapse
SYNAPSE_USER = "matrix-synapse"
SYNAPSE_RELEASES = "/opt/synapse"  # a virtualenv per release: venv-VERSION
SYNAPSE_VENV = f"{SYNAPSE_RELEASES}/venv"  # points at the release that runs
SYNAPSE_PYTHON = f"{SYNAPSE_VENV}/bin/python"
# Its package's metadata folder, named after the release it holds (a shell glob).
SYNAPSE_DIST_INFO = f"{SYNAPSE_VENV}/lib/python3*/site-packages/matrix_synapse-*.dist-info"
SYNAPSE_CONFIG_DIR = "/etc/matrix-synapse"
SYNAPSE_CONFIG = f"{SYNAPSE_CONFIG_DIR}/homeserver.yaml"
SYNAPSE_SIGNING_KEY = "/etc/matrix-synapse/signing.key"
SYNAPSE_DATA = "/var/lib/matrix-synapse"
SYNAPSE_MEDIA = f"{SYNAPSE_DATA}/media"  # media_store_path
SYNAPSE_URL = "http://127.0.0.1:8008"  # loopback only; Caddy proxies to it
# The server name the homeserver was set up with, written once it has its admin account.
MATRIX_SERVER_NAME_RECORD = f"{STATE_DIR}/matrix-server-name"
# Root-only copy of secrets.yaml's matrix_admin_password: the admin's registration and the health
# checks read it on the host, so the password never travels on a command line.
MATRIX_ADMIN_PASSWORD_FILE = f"{STATE_DIR}/matrix-admin-password"
MATRIX_ADMIN_LOCALPART = "admin"

# coturn
COTURN_CONFIG = "/etc/turnserver.conf"
COTURN_CERTIFICATE_SCRIPT = "/usr/local/sbin/commonstack-coturn-certificate"

# nextcloud
NEXTCLOUD_CODE = "/var/www/nextcloud"
NEXTCLOUD_OCC = f"runuser -u www-data -- php {NEXTCLOUD_CODE}/occ"
NEXTCLOUD_DATA = "/var/lib/nextcloud/data"
NEXTCLOUD_ADMIN = "admin"
NEXTCLOUD_WEB_USER = "www-data"

# discourse
DISCOURSE_DIR = "/var/discourse"
DISCOURSE_CONTAINER = "app"
DISCOURSE_APP_YML = f"{DISCOURSE_DIR}/containers/{DISCOURSE_CONTAINER}.yml"
DISCOURSE_BACKUPS = f"{DISCOURSE_DIR}/shared/standalone/backups/default"  # `discourse backup` writes here
DISCOURSE_SOCKET = f"{DISCOURSE_DIR}/shared/standalone/nginx.http.sock"
DISCOURSE_BUILD_STAMP = f"{STATE_DIR}/discourse-build"  # what the running container was built from

# upgrades (commonstack upgrade): one folder per layer being upgraded, its steps in a journal;
# finished upgrades move to history/, where their dumps and old code wait out a grace period.
UPGRADES_DIR = f"{STATE_DIR}/upgrades"
UPGRADE_HISTORY = f"{UPGRADES_DIR}/history"

# backup
BACKUP_CONFIG_DIR = "/etc/commonstack"  # the repository's address, password and SSH key (root only)
BACKUP_SCRIPT = "/usr/local/sbin/commonstack-backup"
RESTORE_SCRIPT = "/usr/local/sbin/commonstack-restore"
BACKUP_STAGING = "/var/backups/commonstack"  # dumps and the manifest, while a backup runs
BACKUP_MANIFEST = f"{BACKUP_STAGING}/manifest.json"
BACKUP_STATE = f"{STATE_DIR}/backup"  # the last good backup, the last repository check, a run's marker
RESTORE_STAGING = f"{STATE_DIR}/restore"  # a snapshot being restored, and the data it replaces
# Held by a backup, a restore and an upgrade: none of them ever runs during another (flock).
MAINTENANCE_LOCK = "/run/lock/commonstack-maintenance.lock"
# An upgrade runs as many SSH commands: between them, the process of this scope unit holds the lock
# for it, and the unit's description names the upgrade's run (a reboot or `systemctl stop` frees it).
MAINTENANCE_HOLDER = "commonstack-maintenance-holder.scope"


def synapse_release_of(dist_info: str) -> str | None:
    """The release a SYNAPSE_DIST_INFO folder is named after (None: not such a folder)."""
    found = re.search(r"matrix_synapse-([0-9][^-/]*)\.dist-info$", dist_info.strip())
    return found[1] if found else None
