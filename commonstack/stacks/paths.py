"""Where the layers keep things on a host: one place for the deploys that write them, the checks
that read them and the backups that save them."""

from __future__ import annotations

STATE_DIR = "/var/lib/commonstack"  # the kit's own records on the host (root only)

# caddy
CADDY_LOCAL_ROOT = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"  # tls.mode internal

# redis
REDIS_SOCKET = "/run/redis/redis-server.sock"

# synapse
SYNAPSE_USER = "matrix-synapse"
SYNAPSE_RELEASES = "/opt/synapse"  # a virtualenv per release: venv-VERSION
SYNAPSE_VENV = f"{SYNAPSE_RELEASES}/venv"  # points at the release that runs
SYNAPSE_PYTHON = f"{SYNAPSE_VENV}/bin/python"
SYNAPSE_CONFIG = "/etc/matrix-synapse/homeserver.yaml"
SYNAPSE_SIGNING_KEY = "/etc/matrix-synapse/signing.key"
SYNAPSE_DATA = "/var/lib/matrix-synapse"
SYNAPSE_URL = "http://127.0.0.1:8008"  # loopback only; Caddy proxies to it
# The server name the homeserver was set up with, written once it has its admin account.
MATRIX_SERVER_NAME_RECORD = f"{STATE_DIR}/matrix-server-name"
# Root-only copy of secrets.yaml's matrix_admin_password: the admin's registration and the health
# checks read it on the host, so the password never travels on a command line.
MATRIX_ADMIN_PASSWORD_FILE = f"{STATE_DIR}/matrix-admin-password"
MATRIX_ADMIN_LOCALPART = "admin"

# coturn
COTURN_CERTIFICATE_SCRIPT = "/usr/local/sbin/commonstack-coturn-certificate"

# nextcloud
NEXTCLOUD_CODE = "/var/www/nextcloud"
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
UPGRADE_LOCK = f"{UPGRADES_DIR}/lock"  # which controller runs an upgrade on the host
UPGRADE_HISTORY = f"{UPGRADES_DIR}/history"

# backup (the backup layer's host-side script; an upgrade runs it for its pre-upgrade backup)
BACKUP_SCRIPT = "/usr/local/sbin/commonstack-backup"
# Held by a backup, a restore and an upgrade: none of them ever runs during another.
MAINTENANCE_LOCK = "/run/lock/commonstack-maintenance.lock"
